/* log: the process's one log sink. One line per event, key=value, to stderr or a file.
 *
 * Under systemd with no log file configured, stderr is the journal: see log_to_journal().
 * Owns: the open log file (if any) and the level threshold. The sink is process-wide on
 * purpose, like syslog(3): every part logs, only main.c opens, reopens (SIGHUP) and closes it.
 * Lines are written with one write(2) each, so concurrent threads never interleave. */
#ifndef OPS_BASE_LOG_H
#define OPS_BASE_LOG_H

#include <stdarg.h>

typedef enum { LOGL_DEBUG = 0, LOGL_INFO, LOGL_WARN, LOGL_ERROR } log_level;

/* Opens the sink: path NULL or "" or "stderr" means standard error. Returns 0, or -1 with
 * errno set when the file cannot be opened (the sink stays on stderr then). */
int log_open(log_level level, const char *path);
/* 1 when lines go to systemd's journal (stderr is the stream named by JOURNAL_STREAM, as
 * checked by log_open): lines then carry a <N> priority prefix and no timestamp. */
int log_to_journal(void);
/* Reopens the same file (after logrotate moved it). Returns 0 or -1 with errno. */
int log_reopen(void);
void log_close(void);
void log_set_level(log_level level);
int log_enabled(log_level level);
/* "debug", "info", "warn"/"warning", "error" -> level. Returns 0, or -1 for anything else. */
int log_parse_level(const char *s, log_level *out);
const char *log_level_name(log_level level);

/* Writes "ts=... level=... event=<event> <fmt...>\n". fmt should produce key=value pairs;
 * quote free text with log_quote(). */
void log_event(log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void log_eventv(log_level level, const char *event, const char *fmt, va_list ap);

/* Copies s into buf as a double-quoted value with \" \\ \n escaped; returns buf. Truncates to
 * fit. Meant for log values that may hold spaces: log_event(.., "msg=%s", log_quote(b, n, s)). */
const char *log_quote(char *buf, unsigned long n, const char *s);

#define log_debug(ev, ...) do { if (log_enabled(LOGL_DEBUG)) log_event(LOGL_DEBUG, ev, __VA_ARGS__); } while (0)
#define log_info(ev, ...) log_event(LOGL_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...) log_event(LOGL_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) log_event(LOGL_ERROR, ev, __VA_ARGS__)

#endif
