/*
 * test_repl.c: drives the `lomo` REPL through a pseudo-terminal (forkpty):
 * start, evaluate an expression, multi-line input, Ctrl-C on a running loop
 * and on a half-typed line, help(lomo), help of a context and a tensor view, and Ctrl-D to leave.
 * Exits 77 (skipped) when no pseudo-terminal or no lomo program is available.
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SKIP 77
#define WAIT_MS 30000   /* generous: sanitizer builds start slowly */

static int g_fd = -1;
static pid_t g_pid = -1;
static char g_buf[1 << 16];
static size_t g_len, g_pos;   /* bytes read; where the next expect() starts */

static void finish(int code) {
    if (g_pid > 0) {
        kill(g_pid, SIGKILL);
        waitpid(g_pid, NULL, 0);
    }
    exit(code);
}

static void fail(const char *what) {
    size_t from = g_len > 600 ? g_len - 600 : 0;
    fprintf(stderr, "test_repl: FAIL: %s\n--- last output ---\n%.*s\n---\n", what, (int)(g_len - from), g_buf + from);
    finish(1);
}

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* reads whatever arrives within ms; returns 0 at end of output */
static int pump(int ms) {
    struct pollfd p = {.fd = g_fd, .events = POLLIN};
    int r = poll(&p, 1, ms);
    if (r <= 0) return 1;
    if (g_len >= sizeof g_buf - 1) {   /* keep the tail */
        size_t keep = sizeof g_buf / 2;
        memmove(g_buf, g_buf + g_len - keep, keep);
        g_pos = g_pos > g_len - keep ? g_pos - (g_len - keep) : 0;
        g_len = keep;
    }
    ssize_t n = read(g_fd, g_buf + g_len, sizeof g_buf - 1 - g_len);
    if (n <= 0) return 0;   /* EIO once the child has gone */
    g_len += (size_t)n;
    g_buf[g_len] = 0;
    return 1;
}

static void expect(const char *s) {
    long end = now_ms() + WAIT_MS;
    for (;;) {
        g_buf[g_len] = 0;
        char *hit = strstr(g_buf + g_pos, s);
        if (hit) {
            g_pos = (size_t)(hit - g_buf) + strlen(s);
            return;
        }
        if (now_ms() > end) break;
        if (!pump(100)) break;
    }
    char msg[256];
    snprintf(msg, sizeof msg, "expected \"%s\"", s);
    fail(msg);
}

static void send(const char *s) {
    size_t n = strlen(s);
    while (n) {
        ssize_t w = write(g_fd, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) fail("write to the pseudo-terminal");
        s += w;
        n -= (size_t)w;
    }
}

static const char *find_lomo(char *buf, size_t cap) {
    const char *env = getenv("LOMO_EXE");
    if (env && access(env, X_OK) == 0) return env;
#ifdef LOMO_EXE
    if (access(LOMO_EXE, X_OK) == 0) return LOMO_EXE;
#endif
    /* build/tests/test_repl -> build/bindings/lomo */
    ssize_t n = readlink("/proc/self/exe", buf, cap - 32);
    if (n <= 0) return NULL;
    buf[n] = 0;
    char *slash = strrchr(buf, '/');
    if (!slash) return NULL;
    strcpy(slash, "/../bindings/lomo");
    return access(buf, X_OK) == 0 ? buf : NULL;
}

int main(void) {
    char pathbuf[PATH_MAX];
    const char *lomo = find_lomo(pathbuf, sizeof pathbuf);
    if (!lomo) {
        fprintf(stderr, "test_repl: SKIP: the lomo program was not found (set LOMO_EXE)\n");
        return SKIP;
    }
    char home[] = "/tmp/lomo_repl_XXXXXX";
    if (!mkdtemp(home)) {
        perror("mkdtemp");
        return 1;
    }

    struct winsize ws = {.ws_row = 40, .ws_col = 200};
    g_pid = forkpty(&g_fd, NULL, NULL, &ws);
    if (g_pid < 0) {
        fprintf(stderr, "test_repl: SKIP: no pseudo-terminal (%s)\n", strerror(errno));
        rmdir(home);
        return SKIP;
    }
    if (g_pid == 0) {
        setenv("TERM", "dumb", 1);
        setenv("HOME", home, 1);
        setenv("INPUTRC", "/dev/null", 1);
        execl(lomo, "lomo", (char *)NULL);
        _exit(127);
    }

    expect("help(lomo)");   /* the banner */
    expect("> ");

    send("1+1\n");
    expect("\n2\r\n");

    send("function f()\n");
    expect(">> ");
    send("return 3\n");
    expect(">> ");
    send("end\n");
    send("f()\n");
    expect("\n3\r\n");

    send("while true do end\n");
    for (long end = now_ms() + 300; now_ms() < end;) pump(50);
    send("\x03");
    expect("interrupted");
    expect("> ");
    send("2+3\n");
    expect("\n5\r\n");

    /* Ctrl-C on a half-typed line discards it */
    send("abc");
    for (long end = now_ms() + 200; now_ms() < end;) pump(50);
    send("\x03");
    for (long end = now_ms() + 200; now_ms() < end;) pump(50);
    send("6*7\n");
    expect("\n42\r\n");

    send("help(lomo)\n");
    expect("lomo.optimizer");
    send("help(lomo.context())\n");
    expect("obj:memory");
    expect("obj.device");
    /* a tensor view: how the REPL shows it, and its own help */
    send("t = lomo.model(lomo.context{device = 'cpu'}, {hidden_size = 16, intermediate_size = 32, "
         "num_hidden_layers = 1, num_attention_heads = 2, vocab_size = 32}):param('model.norm.weight')\n");
    expect("> ");
    send("t\n");
    expect("tensor(model.norm.weight, [16], f32)");
    send("help(t)\n");
    expect("lomo.tensor methods:");
    expect("obj:stats");
    expect("obj.dtype");
    /* Only at the prompt is the terminal in readline's raw mode: a ^D sent while the line
     * discipline is still canonical (output in progress) can be lost in the mode switch. */
    expect("> ");
    for (long end = now_ms() + 300; now_ms() < end;) pump(50);

    send("\x04");   /* Ctrl-D: end of input */
    int status = 0;
    long end = now_ms() + WAIT_MS;
    pid_t w = 0;
    while ((w = waitpid(g_pid, &status, WNOHANG)) == 0 && now_ms() < end) pump(50);
    if (w != g_pid) fail("the REPL did not exit on Ctrl-D");
    g_pid = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fail("the REPL exited with a failure status");

    char hist[sizeof home + 32];
    snprintf(hist, sizeof hist, "%s/.lomo_history", home);
    struct stat sb;
    if (stat(hist, &sb) != 0 || sb.st_size == 0) fail("no history file was written");
    unlink(hist);
    rmdir(home);
    if (getenv("TEST_REPL_VERBOSE")) fwrite(g_buf, 1, g_len, stdout);
    printf("test_repl: all passed\n");
    return 0;
}
