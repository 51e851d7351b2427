#ifndef LIFEBOAT_SYS_H
#define LIFEBOAT_SYS_H
#include <sys/types.h>

// Thin wrappers over Linux calls that Swift's Glibc module does not import.
ssize_t lb_llistxattr(const char *path, char *list, size_t size);
ssize_t lb_lgetxattr(const char *path, const char *name, void *value, size_t size);
int lb_lsetxattr(const char *path, const char *name, const void *value, size_t size);
int lb_fsetxattr(int fd, const char *name, const void *value, size_t size);
int lb_o_noatime(void);
void lb_tune_malloc(void);
#endif
