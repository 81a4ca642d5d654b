/* sdnotify: tells systemd how a service is doing (sd_notify(3)): READY=1 once it listens,
 * STATUS= lines for `systemctl status`, WATCHDOG=1 pings, STOPPING=1 on shutdown.
 *
 * Owns: the watchdog thread, if the unit has WatchdogSec= set for this process. Outside
 * systemd (no NOTIFY_SOCKET) every call is a cheap no-op that returns 0, so the programs call
 * it unconditionally. The pings come from a thread rather than from main's signal loop because
 * main sleeps in sigwait; the optional probe lets the caller make the pings mean "working",
 * not merely "not crashed": a probe that fails suppresses the ping and systemd restarts us.
 * A message that cannot be sent is logged here (event sdnotify.send_failed) and returns -1:
 * the programs log nothing more and carry on, since serving matters more than telling. */
#ifndef OPS_BASE_SDNOTIFY_H
#define OPS_BASE_SDNOTIFY_H

#include <stddef.h>
#include <stdint.h>

typedef struct sdn sdn;

/* Returns 0 when the service works, anything else to skip this watchdog ping. Called from
 * the watchdog thread. */
typedef int (*sdn_probe)(void *user);

/* Reads the environment systemd set for us and starts the watchdog thread when WatchdogSec=
 * applies to this process. probe may be NULL (always alive). Returns the handle, or NULL with
 * err when the thread cannot be started. */
sdn *sdn_new(sdn_probe probe, void *user, char *err, size_t errlen);
/* Stops the watchdog thread. NULL is a no-op. */
void sdn_free(sdn *n);

/* 1 when a service manager listens (NOTIFY_SOCKET is set), else 0. */
int sdn_active(const sdn *n);
/* The watchdog interval systemd expects pings within (0: none), in microseconds. Pings are
 * sent at half of it. */
uint64_t sdn_watchdog_usec(const sdn *n);

/* READY=1 plus a STATUS= line. Returns 0, or -1 when the message could not be sent. */
int sdn_ready(sdn *n, const char *status);
/* A STATUS= line, printf-style. Returns 0 or -1. */
int sdn_status(sdn *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* RELOADING=1 (before a reload) and then sdn_ready() when done. Returns 0 or -1. */
int sdn_reloading(sdn *n);
/* STOPPING=1 plus a STATUS= line: systemd then waits for the exit instead of pinging. */
int sdn_stopping(sdn *n, const char *status);

#endif
