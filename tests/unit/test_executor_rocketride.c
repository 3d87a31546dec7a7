/* The rocketride executor's pure parts: the task token the engine derives
 * (the same bytes as Python's json.dumps and sha256, so that rrdeploy finds
 * a task before and after starting it). Runs themselves are tested against
 * the stand-in engine (tests/integration/test_engine.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "runner/executor.h"

static void assert_token(const char *user, const char *project, const char *source,
                         const char *want)
{
    char got[36];
    rocketride_task_token(user, project, source, got);
    assert_string_equal(got, want);
}

/* The engine's own examples. */
static void test_token_vectors(void **state)
{
    (void)state;
    assert_token("local", "e612b741-748c-4b35-a8b7-186797a8ea42", "webhook_1",
                 "tk_1b4bbac062687abd2f25ecf1f535d7e2");
    assert_token("local", "p1", "webhook_1", "tk_80dcb3cf19502659e7e571a44a3cef1b");
}

/* Python escapes non-ASCII as \uXXXX (astral characters as surrogate
 * pairs), quotes, backslashes, control characters and DEL. */
static void test_token_escapes_like_python(void **state)
{
    (void)state;
    assert_token("zo\xc3\xab", "caf\xc3\xa9/\xe2\x98\x83",
                 "src\xf0\x9f\x98\x80\"\\\n\x01\x7f",
                 "tk_bfc8d11da3cfe9ddd5dd5136a57811f7");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_vectors),
        cmocka_unit_test(test_token_escapes_like_python),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
