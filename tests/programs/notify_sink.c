/* notify_sink: stands in for systemd's notify socket in script tests. Binds a datagram socket
 * at PATH and prints every message it gets as one line (newlines shown as '|'), until a
 * message contains STOPPING=1 or SECONDS pass without one.
 *   notify_sink PATH SECONDS */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: notify_sink PATH SECONDS\n");
        return 2;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(argv[1]) >= sizeof sa.sun_path) {
        fprintf(stderr, "notify_sink: path too long\n");
        return 2;
    }
    memcpy(sa.sun_path, argv[1], strlen(argv[1]) + 1);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("notify_sink: bind");
        return 1;
    }
    time_t end = time(NULL) + atoi(argv[2]);
    char buf[4096];
    for (;;) {
        int left = (int)(end - time(NULL));
        if (left <= 0) break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, left * 1000) != 1) continue;
        ssize_t r = recv(fd, buf, sizeof buf - 1, 0);
        if (r < 0) continue;
        buf[r] = 0;
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] == '\n') buf[i] = '|';
        printf("%s\n", buf);
        fflush(stdout);
        if (strstr(buf, "STOPPING=1")) break;
    }
    close(fd);
    unlink(argv[1]);
    return 0;
}
