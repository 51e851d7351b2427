#!/usr/bin/env python3
"""Compares two trees attribute for attribute: type, mode, uid, gid, size, mtime (ns), content,
symlink targets, xattrs, device numbers, hard-link grouping and sparseness. Exit 1 on any difference."""
import os, stat, sys

def scan(root):
    out = {}
    inode_groups = {}
    for dirpath, dirnames, filenames in os.walk(root.encode()):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root.encode())
            st = os.lstat(p)
            e = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid}
            if not stat.S_ISDIR(st.st_mode) and not stat.S_ISLNK(st.st_mode):
                e["mtime"] = st.st_mtime_ns
            if stat.S_ISDIR(st.st_mode):
                e["mtime"] = st.st_mtime_ns
            if stat.S_ISREG(st.st_mode):
                e["size"] = st.st_size
                with open(p, "rb") as f:
                    e["data"] = hash(f.read())
                e["sparse"] = st.st_blocks * 512 < st.st_size
                if st.st_nlink > 1:
                    inode_groups.setdefault(st.st_ino, []).append(rel)
            if stat.S_ISLNK(st.st_mode):
                e["target"] = os.readlink(p)
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                e["rdev"] = st.st_rdev
            try:
                e["xattrs"] = sorted((k, os.getxattr(p, k, follow_symlinks=False)) for k in os.listxattr(p, follow_symlinks=False))
            except OSError:
                e["xattrs"] = []
            out[rel] = e
    groups = sorted(sorted(g) for g in inode_groups.values())
    return out, groups

a, ga = scan(sys.argv[1])
b, gb = scan(sys.argv[2])
bad = 0
for k in sorted(set(a) | set(b)):
    if k not in a or k not in b:
        print("only in one tree:", k, "(src)" if k in a else "(restored)"); bad += 1; continue
    for attr in sorted(set(a[k]) | set(b[k])):
        if a[k].get(attr) != b[k].get(attr):
            print("differs:", k, attr, a[k].get(attr), b[k].get(attr)); bad += 1
if ga != gb:
    print("hard-link groups differ:", ga, gb); bad += 1
print("compared", len(a), "entries,", bad, "differences")
sys.exit(1 if bad else 0)
