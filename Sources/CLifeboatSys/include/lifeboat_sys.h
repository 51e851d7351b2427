#ifndef LIFEBOAT_SYS_H
#define LIFEBOAT_SYS_H
#include <sys/types.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

// Thin wrappers over Linux calls that Swift's Glibc module does not import.
ssize_t lb_llistxattr(const char *path, char *list, size_t size);
ssize_t lb_lgetxattr(const char *path, const char *name, void *value, size_t size);
int lb_lsetxattr(const char *path, const char *name, const void *value, size_t size);
int lb_fsetxattr(int fd, const char *name, const void *value, size_t size);
int lb_o_noatime(void);
void lb_tune_malloc(void);
// openat2(2) with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS: opens `path` below `dirfd`
// without following any symlink on the way. Returns -1 with errno ENOSYS on kernels before 5.6.
int lb_open_beneath(int dirfd, const char *path, int flags, mode_t mode);
// accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC (not imported: it needs _GNU_SOURCE).
int lb_accept4(int fd);
// Standard output line-buffered whatever it is (a pipe, a file), as a terminal is.
void lb_line_buffer_stdout(void);
/* Columns of the terminal on fd, or 0 if fd is not a terminal (TIOCGWINSZ: ioctl is variadic, not callable from Swift). */
int lb_terminal_columns(int fd);
/* ioprio_set(IOPRIO_WHO_PROCESS, 0, class << 13 | level) for this process (class 1 realtime, 2 best-effort, 3 idle). */
int lb_ioprio_set_self(int ioclass, int level);
#include <spawn.h>
/* posix_spawn_file_actions_addclosefrom_np(actions, from): the child gets no descriptor >= from (glibc 2.34). */
int lb_spawn_close_from(posix_spawn_file_actions_t *actions, int from);
/* posix_spawn_file_actions_addchdir_np(actions, path): the child starts in path (glibc 2.29). */
int lb_spawn_chdir(posix_spawn_file_actions_t *actions, const char *path);
#endif

/// One request of a drill's client loop: connects to HOST:PORT, sends `len` bytes of `send`, and waits for
/// at least one byte back, all within `timeout_ms`. Returns 0 on success, -1 when the connection failed, -2 on a
/// timeout, -3 when the peer closed without answering.
int lb_tcp_probe(const char *host, int port, const void *send, size_t len, int timeout_ms);
