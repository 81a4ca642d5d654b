/* rpc_testserver: our opstest.Test server as a process, for the interop tests (a grpc-js
 * client calls it) and the benchmark. Prints "LISTENING <port>" when ready; stops on SIGTERM,
 * SIGINT or end of standard input when that is a pipe.
 *   rpc_testserver [--addr HOST:PORT] [--tls CERT KEY] [--mtls CA] [--workers N] [--quiet] */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "testsvc.h"

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1:0";
    rpc_tls tls;
    memset(&tls, 0, sizeof tls);
    int workers = 0, quiet = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--addr") && i + 1 < argc) addr = argv[++i];
        else if (!strcmp(argv[i], "--tls") && i + 2 < argc) { tls.enabled = 1; tls.cert_file = argv[++i]; tls.key_file = argv[++i]; }
        else if (!strcmp(argv[i], "--mtls") && i + 1 < argc) { tls.ca_file = argv[++i]; tls.require_client_cert = 1; }
        else if (!strcmp(argv[i], "--workers") && i + 1 < argc) workers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quiet")) quiet = 1;
        else { fprintf(stderr, "usage: %s [--addr A] [--tls CERT KEY] [--mtls CA] [--workers N] [--quiet]\n", argv[0]); return 2; }
    }
    log_open(quiet ? LOGL_WARN : LOGL_INFO, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* before any thread starts: they inherit it */
    testsvc t;
    char err[512];
    if (testsvc_start(&t, addr, &tls, NULL, workers, err, sizeof err) != 0) {
        fprintf(stderr, "rpc_testserver: %s\n", err);
        return 1;
    }
    printf("LISTENING %d\n", t.port);
    fflush(stdout);
    struct stat st;
    if (fstat(0, &st) == 0 && S_ISFIFO(st.st_mode)) {
        /* A pipe on stdin: its end (the test script died) stops us too. */
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
        char buf[64];
        while (read(0, buf, sizeof buf) > 0) {}
    } else {
        int sig;
        sigwait(&set, &sig);
    }
    testsvc_stop(&t, 2000);
    return 0;
}
