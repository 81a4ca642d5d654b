/* Keeps the support library non-empty while it has no other file. */
typedef int ops_testsupport_empty;
