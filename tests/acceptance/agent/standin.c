/* The Orbit stand-in for install tests: a service that stays running, like the real agent.
 *
 * On start it writes /var/lib/orbit-standin/<pid>.rec with its version, argv and environment
 * (each value length-prefixed, so any byte round-trips exactly), appends "start" to
 * events.log, then sleeps until SIGTERM, when it appends "stop" and exits 0. Built static with
 * -DSTANDIN_VERSION="x.y.z" so the test image needs no libc of a given version.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef STANDIN_VERSION
#define STANDIN_VERSION "0.0.0"
#endif
#define DIR "/var/lib/orbit-standin"

extern char **environ;
static volatile sig_atomic_t stop;

static void on_term(int sig) { (void)sig; stop = 1; }

static void field(FILE *f, const char *key, const char *value) {
  fprintf(f, "%s %zu:", key, strlen(value));
  fwrite(value, 1, strlen(value), f);
  fputc('\n', f);
}

static void event(const char *what) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  FILE *f = fopen(DIR "/events.log", "a");
  if (!f) return;
  fprintf(f, "%lld.%03ld %s %s %d\n", (long long)ts.tv_sec, ts.tv_nsec / 1000000, what,
          STANDIN_VERSION, (int)getpid());
  fclose(f);
}

int main(int argc, char **argv) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  if (mkdir(DIR, 0755) != 0 && errno != EEXIST) return 1;
  char path[128];
  snprintf(path, sizeof path, DIR "/%d.rec", (int)getpid());
  FILE *f = fopen(path, "w");
  if (!f) return 1;
  field(f, "version", STANDIN_VERSION);
  for (int i = 0; i < argc; i++) field(f, "arg", argv[i]);
  for (char **e = environ; *e; e++) field(f, "env", *e);
  fclose(f);
  event("start");

  while (!stop) pause();
  event("stop");
  return 0;
}
