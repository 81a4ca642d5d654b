/* Test agent: allocates and touches argv[1] MiB (default 64), then sleeps until killed. Used
 * to trip the supervisor's memory threshold. */
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 64;
    char *p = malloc(mib << 20);
    if (!p) return 1;
    /* Volatile stores: the compiler may not drop writes to memory nobody reads. Every page
     * touched counts in RSS. */
    volatile char *v = p;
    for (size_t i = 0; i < (mib << 20); i += 4096) v[i] = 1;
    for (;;) pause();
}
