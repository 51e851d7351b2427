#!/usr/bin/env python3
"""Writes lifeboat(1) in roff from the argument parser's own description of the commands
(`lifeboat --experimental-dump-help`): every command and subcommand with its abstract, discussion
(examples included), arguments and options. `make build` runs it; the page lands in .build/man/lifeboat.1.

Usage: scripts/manpage.py path/to/lifeboat OUTPUT.1"""
import datetime, json, os, re, subprocess, sys


def esc(text):
    """Roff-safe text: backslashes doubled, a leading dot or quote escaped, dashes as real minus signs."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + l) if l.startswith((".", "'")) else l for l in text.split("\n"))


def names(arg):
    out = []
    for n in arg.get("names", []):
        out.append(("-" if n["kind"] in ("short", "longWithSingleDash") else "--") + n["name"])
    return ", ".join(out)


def arguments(cmd, lines, shared):
    args = [a for a in cmd.get("arguments", []) if a.get("shouldDisplay", True)]
    positionals = [a for a in args if a["kind"] == "positional"]
    # Options shared with every repository command are listed once, under GLOBAL OPTIONS; a command that takes
    # none of them (serve, proxy, version) keeps its own (its --json, say).
    takes_globals = any(names(a) == "-r, --repo" for a in args)
    options = [a for a in args if a["kind"] != "positional" and not (takes_globals and names(a) in shared)
               and names(a) not in ("-h, --help", "--version")]
    for a in positionals:
        lines += [".TP", "\\fI%s\\fR%s" % (esc(a.get("valueName", "")), " ..." if a.get("isRepeating") else ""), esc(a.get("abstract", ""))]
    for a in options:
        value = " \\fI<%s>\\fR" % esc(a["valueName"]) if a["kind"] == "option" and a.get("valueName") else ""
        text = a.get("abstract", "")
        if a.get("defaultValue"):
            text += " (default: %s)" % a["defaultValue"]
        if a.get("allValues"):
            text += " One of: %s." % ", ".join(a["allValues"])
        lines += [".TP", "\\fB%s\\fR%s" % (esc(names(a)), value), esc(text)]


def discussion(text, lines):
    # The examples are preformatted: keep their lines as they are.
    for para in text.strip().split("\n\n"):
        if "\n" in para or para.startswith(" "):
            lines += [".PP", ".nf", esc(para), ".fi"]
        else:
            lines += [".PP", esc(para)]


def walk(cmd, path, lines, shared):
    for sub in cmd.get("subcommands", []):
        if not sub.get("shouldDisplay", True) or sub["commandName"] == "help":
            continue
        full = path + [sub["commandName"]]
        lines += [".SS %s" % esc(" ".join(full)), esc(sub.get("abstract", ""))]
        if sub.get("discussion"):
            discussion(sub["discussion"], lines)
        arguments(sub, lines, shared)
        walk(sub, full, lines, shared)


def main():
    binary, output = sys.argv[1], sys.argv[2]
    dump = json.loads(subprocess.run([binary, "--experimental-dump-help"], check=True, capture_output=True, text=True).stdout)
    root = dump["command"]
    version = subprocess.run([binary, "version"], capture_output=True, text=True).stdout.strip()
    # The global options: those of `backup` that every repository command shares (they are listed once).
    backup = next(s for s in root["subcommands"] if s["commandName"] == "backup")
    snapshots = next(s for s in root["subcommands"] if s["commandName"] == "snapshots")
    shared_args = [a for a in backup["arguments"] if a["kind"] != "positional" and names(a) in {names(b) for b in snapshots["arguments"]}
                   and names(a) not in ("-h, --help", "--version", "--host", "--tag", "--path")]
    shared = {names(a) for a in shared_args}
    # Reproducible builds: SOURCE_DATE_EPOCH, when set, is the page's date.
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    date = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc).date() if epoch.isdigit() else datetime.date.today()).isoformat()
    lines = ['.TH LIFEBOAT 1 "%s" "%s" "Lifeboat manual"' % (date, esc(version)), ".SH NAME",
             "lifeboat \\- %s" % esc(root.get("abstract", "")), ".SH SYNOPSIS", "\\fBlifeboat\\fR [\\fIglobal options\\fR] \\fIcommand\\fR [\\fIoptions\\fR] [\\fIarguments\\fR]",
             ".SH DESCRIPTION"]
    discussion(root.get("discussion", ""), lines)
    lines += [".SH GLOBAL OPTIONS", "Taken by every command that opens a repository, before or after its name."]
    arguments({"arguments": shared_args}, lines, set())
    lines += [".SH COMMANDS"]
    walk(root, ["lifeboat"], lines, shared)
    lines += [".SH ENVIRONMENT", "LIFEBOAT_REPOSITORY, LIFEBOAT_PASSWORD_FILE, LIFEBOAT_PASSWORD, LIFEBOAT_CACERT, LIFEBOAT_TIMEOUT, "
              "LIFEBOAT_CACHE_DIR, LIFEBOAT_SITES, LIFEBOAT_NOW: see the options they stand for.",
              ".SH SEE ALSO", "restic(1); the README and docs/ of the Lifeboat sources."]
    text = "\n".join(lines) + "\n"
    if not re.search(r"^\.SS lifeboat backup$", text, re.M):
        sys.exit("manpage.py: no backup command in the dump: is this lifeboat?")
    with open(output, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
