/* auth: token table checks, every way a caller is refused, roles, and concurrent checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "manager/auth.h"
#include "rpc/status.h"

static void hex_sha256(const char *tok, char out[65])
{
    unsigned char h[32];
    unsigned int n = 0;
    assert_true(EVP_Digest(tok, strlen(tok), h, &n, EVP_sha256(), NULL));
    for (int i = 0; i < 32; i++) sprintf(out + 2 * i, "%02x", h[i]);
}

typedef struct table {
    char hv[65], ho[65], ha[65];
    auth *a;
} table;

static int setup(void **state)
{
    static table t;
    hex_sha256("view-secret", t.hv);
    hex_sha256("oper-secret", t.ho);
    hex_sha256("admin-secret", t.ha);
    /* Upper case is accepted in the file. */
    for (char *p = t.ha; *p; p++)
        if (*p >= 'a' && *p <= 'f') *p = (char)(*p - 'a' + 'A');
    auth_token tk[] = {{"vera", AUTH_VIEWER, t.hv}, {"otto", AUTH_OPERATOR, t.ho}, {"ada", AUTH_ADMIN, t.ha}};
    char err[256];
    t.a = auth_new(tk, 3, err, sizeof err);
    if (!t.a) return -1;
    *state = &t;
    return 0;
}

static int teardown(void **state)
{
    table *t = *state;
    auth_free(t->a);
    return 0;
}

static void roles_parse_and_name(void **state)
{
    (void)state;
    auth_role r;
    assert_int_equal(auth_parse_role("viewer", &r), 0);
    assert_int_equal(r, AUTH_VIEWER);
    assert_int_equal(auth_parse_role("operator", &r), 0);
    assert_int_equal(r, AUTH_OPERATOR);
    assert_int_equal(auth_parse_role("admin", &r), 0);
    assert_int_equal(r, AUTH_ADMIN);
    assert_int_equal(auth_parse_role("root", &r), -1);
    assert_int_equal(auth_parse_role("Admin", &r), -1);
    assert_int_equal(auth_parse_role(NULL, &r), -1);
    assert_string_equal(auth_role_name(AUTH_OPERATOR), "operator");
    assert_string_equal(auth_role_name((auth_role)0), "none");
    assert_true(AUTH_VIEWER < AUTH_OPERATOR && AUTH_OPERATOR < AUTH_ADMIN);
}

static void bad_tables_refused(void **state)
{
    (void)state;
    char err[256];
    /* sha256("abc"), a known vector, less one character */
    const char *short_hash = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a";
    auth_token t1[] = {{"x", AUTH_VIEWER, short_hash}};
    assert_null(auth_new(t1, 1, err, sizeof err));
    assert_string_equal(err, "token x: sha256 must be 64 hex characters");
    auth_token t2[] = {{"y", AUTH_VIEWER, "zz7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}};
    assert_null(auth_new(t2, 1, err, sizeof err));
    assert_non_null(strstr(err, "token y"));
    auth_token t3[] = {{"z", (auth_role)7, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}};
    assert_null(auth_new(t3, 1, err, sizeof err));
    assert_string_equal(err, "token z: unknown role");
    auth_token t4[] = {{"", AUTH_VIEWER, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}};
    assert_null(auth_new(t4, 1, err, sizeof err));
    auth_token t5[] = {{"abc", AUTH_VIEWER, NULL}};
    assert_null(auth_new(t5, 1, err, sizeof err));
}

static void known_vector(void **state)
{
    (void)state;
    char err[256], msg[256];
    auth_token t[] = {{"abc", AUTH_ADMIN, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}};
    auth *a = auth_new(t, 1, err, sizeof err);
    assert_non_null(a);
    auth_identity who;
    assert_int_equal(auth_check(a, "Bearer abc", AUTH_ADMIN, &who, msg, sizeof msg), RPC_OK);
    assert_string_equal(who.name, "abc");
    assert_int_equal(auth_check(a, "Bearer abcd", AUTH_VIEWER, &who, msg, sizeof msg), RPC_UNAUTHENTICATED);
    assert_int_equal(auth_check(a, "Bearer ab", AUTH_VIEWER, &who, msg, sizeof msg), RPC_UNAUTHENTICATED);
    auth_free(a);
}

static void refusals(void **state)
{
    table *t = *state;
    char msg[256];
    auth_identity who;
    assert_int_equal(auth_check(t->a, NULL, AUTH_VIEWER, &who, msg, sizeof msg), RPC_UNAUTHENTICATED);
    assert_string_equal(msg, "missing authorization: Bearer token");
    assert_string_equal(who.name, "");
    assert_int_equal(who.role, 0);
    assert_int_equal(auth_check(t->a, "", AUTH_VIEWER, &who, msg, sizeof msg), RPC_UNAUTHENTICATED);
    assert_int_equal(auth_check(t->a, "Basic view-secret", AUTH_VIEWER, &who, msg, sizeof msg), RPC_UNAUTHENTICATED);
    assert_non_null(strstr(msg, "missing authorization: Bearer token"));
    assert_int_equal(auth_check(t->a, "view-secret", AUTH_VIEWER, &who, msg, sizeof msg), RPC_UNAUTHENTICATED);
    assert_int_equal(auth_check(t->a, "Bearer ", AUTH_VIEWER, &who, msg, sizeof msg), RPC_UNAUTHENTICATED);
    assert_int_equal(auth_check(t->a, "Bearer", AUTH_VIEWER, &who, msg, sizeof msg), RPC_UNAUTHENTICATED);
    assert_int_equal(auth_check(t->a, "Bearer view secret", AUTH_VIEWER, &who, msg, sizeof msg), RPC_UNAUTHENTICATED);
    assert_int_equal(auth_check(t->a, "Bearer wrong", AUTH_VIEWER, &who, msg, sizeof msg), RPC_UNAUTHENTICATED);
    assert_string_equal(msg, "unknown token");
    assert_string_equal(who.name, "");
    /* The hash itself is not a token. */
    char bearer_hash[80];
    snprintf(bearer_hash, sizeof bearer_hash, "Bearer %s", t->hv);
    assert_int_equal(auth_check(t->a, bearer_hash, AUTH_VIEWER, &who, msg, sizeof msg), RPC_UNAUTHENTICATED);

    assert_int_equal(auth_check(t->a, "Bearer view-secret", AUTH_OPERATOR, &who, msg, sizeof msg), RPC_PERMISSION_DENIED);
    assert_string_equal(msg, "this call needs role operator; token 'vera' has role viewer");
    assert_string_equal(who.name, "vera"); /* known: the refusal is audited under its name */
    assert_int_equal(who.role, AUTH_VIEWER);
    assert_int_equal(auth_check(t->a, "Bearer oper-secret", AUTH_ADMIN, &who, msg, sizeof msg), RPC_PERMISSION_DENIED);
    assert_string_equal(msg, "this call needs role admin; token 'otto' has role operator");
}

static void roles_grant(void **state)
{
    table *t = *state;
    char msg[256];
    auth_identity who;
    assert_int_equal(auth_check(t->a, "Bearer view-secret", AUTH_VIEWER, &who, msg, sizeof msg), RPC_OK);
    assert_string_equal(who.name, "vera");
    assert_int_equal(auth_check(t->a, "Bearer oper-secret", AUTH_VIEWER, &who, msg, sizeof msg), RPC_OK);
    assert_int_equal(auth_check(t->a, "Bearer oper-secret", AUTH_OPERATOR, &who, msg, sizeof msg), RPC_OK);
    assert_string_equal(who.name, "otto");
    assert_int_equal(who.role, AUTH_OPERATOR);
    /* The last entry (stored in upper case) matches too; the scheme is case-insensitive. */
    assert_int_equal(auth_check(t->a, "bearer admin-secret", AUTH_ADMIN, &who, msg, sizeof msg), RPC_OK);
    assert_string_equal(who.name, "ada");
    assert_int_equal(auth_check(t->a, "BEARER  admin-secret ", AUTH_ADMIN, &who, msg, sizeof msg), RPC_OK);
    assert_int_equal(auth_count(t->a), 3);
}

static void no_tokens_refuse_everything(void **state)
{
    (void)state;
    char err[256], msg[256];
    auth *a = auth_new(NULL, 0, err, sizeof err);
    assert_non_null(a);
    auth_identity who;
    assert_int_equal(auth_check(a, "Bearer anything", AUTH_VIEWER, &who, msg, sizeof msg), RPC_UNAUTHENTICATED);
    assert_non_null(strstr(msg, "admin.tokens"));
    assert_int_equal(auth_count(a), 0);
    auth_free(a);
    assert_int_equal(auth_check(NULL, "Bearer x", AUTH_VIEWER, &who, msg, sizeof msg), RPC_UNAUTHENTICATED);
    auth_free(NULL);
}

static void *checker(void *arg)
{
    table *t = arg;
    char msg[256];
    auth_identity who;
    for (int i = 0; i < 2000; i++) {
        const char *h = i % 3 == 0 ? "Bearer view-secret" : i % 3 == 1 ? "Bearer oper-secret" : "Bearer nope";
        int want = i % 3 == 2 ? RPC_UNAUTHENTICATED : RPC_OK;
        if (auth_check(t->a, h, AUTH_VIEWER, &who, msg, sizeof msg) != want) return (void *)1;
    }
    return NULL;
}

static void concurrent_checks(void **state)
{
    pthread_t th[4];
    for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&th[i], NULL, checker, *state), 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(th[i], &r);
        assert_null(r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(roles_parse_and_name),
        cmocka_unit_test(bad_tables_refused),
        cmocka_unit_test(known_vector),
        cmocka_unit_test_setup_teardown(refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(roles_grant, setup, teardown),
        cmocka_unit_test(no_tokens_refuse_everything),
        cmocka_unit_test_setup_teardown(concurrent_checks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
