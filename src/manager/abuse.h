/* abuse: the manager's defences against callers that send too much -- token buckets that limit
 * RegisterNode per peer address, and a refusal logger that writes one line per (peer, kind) per
 * interval (with the count of refusals it held back) instead of one line per call, so that a
 * flood cannot also flood the log.
 *
 * Owns: the per-peer tables (bounded: idle entries are swept; past max_peers, the peers not
 * yet known share one bucket and one log slot). Thread-safe (one mutex). */
#ifndef OPS_MANAGER_ABUSE_H
#define OPS_MANAGER_ABUSE_H

#include <stddef.h>
#include <stdint.h>

/* A token bucket: holds at most burst tokens, refilled at rate tokens per second. Start it
 * with abuse_bucket_init (full). Not locked: the caller serialises. */
typedef struct abuse_bucket {
    double tokens;
    int64_t last_ms;
} abuse_bucket;

void abuse_bucket_init(abuse_bucket *b, double burst, int64_t now_ms);
/* Takes one token: 1 when there was one, 0 when the caller is over the rate. A clock that
 * goes backwards refills nothing. */
int abuse_bucket_take(abuse_bucket *b, double rate, double burst, int64_t now_ms);

typedef struct abuse abuse;

typedef struct abuse_opts {
    double register_rate;    /* RegisterNode calls per second per peer address; 0 = unlimited */
    double register_burst;   /* calls a peer may make at once; 0 = 10 */
    int64_t log_interval_ms; /* one refusal line per (peer, kind) per interval; 0 = 60 s */
    size_t max_peers;        /* entries kept per table; 0 = 10000 */
} abuse_opts;

abuse *abuse_new(const abuse_opts *o, char *err, size_t errlen);
void abuse_free(abuse *a);

/* The address part of an rpc peer ("ipv4:10.0.0.5:40112" -> "10.0.0.5", "ipv6:[::1]:5" ->
 * "::1"); the whole string when it has no port. */
void abuse_peer_host(const char *peer, char *out, size_t n);
/* 1: peer (an rpc peer string) may register now; 0: over its rate. */
int abuse_allow_register(abuse *a, const char *peer, int64_t now_ms);
/* Records one refusal of kind (a short word: "register_rate", "report_size"...) for peer.
 * Returns 1 when the caller should log it now -- the first one of this (peer, kind) in the
 * interval -- with *held (may be NULL) = refusals not logged since the last line; else 0. */
int abuse_note(abuse *a, const char *peer, const char *kind, int64_t now_ms, uint64_t *held);

#endif
