/// The examples of each command's --help; README.md's "Examples" section lists the same ones, and
/// tests/integration/examples.sh runs every one against a scratch repository.
///
/// The repository and its password come from LIFEBOAT_REPOSITORY (here /srv/lifeboat) and LIFEBOAT_PASSWORD_FILE
/// unless `-r` says otherwise; /mnt/usb/repo is a second repository (a USB disk), the user is `me`.
/// A command line is at most 73 characters and a description at most 76: rendered ("    $ " + command,
/// "  " + description + ":") every line stays within 79 columns, the longest line the argument parser does not wrap
/// on an 80-column terminal. The IDs 4bd1c2a9, e2f0b917 (snapshots) and 6a3c5d21 (a key) stand for real ones: the
/// test substitutes them.
enum Examples {
    /// The top-level help's: a first backup and restore (each is also one of its command's examples).
    static let root = render([
        ("Create the repository named by LIFEBOAT_REPOSITORY", "lifeboat init"),
        ("Back up two folders, tagged", "lifeboat backup ~/Documents ~/Pictures --tag home"),
        ("List every snapshot", "lifeboat snapshots"),
        ("Restore the latest snapshot, then re-read every file to verify it",
         "lifeboat restore latest --target /tmp/restore --verify"),
    ])

    static let `init` = render([
        ("Create the repository named by LIFEBOAT_REPOSITORY", "lifeboat init"),
        ("One in your home folder, with the strongest compression", "lifeboat -r ~/backups/repo init --compression max"),
        ("A second one that chunks data like the first: copies skip what it has",
         "lifeboat -r /mnt/usb/repo init --copy-chunker-params-from /srv/lifeboat"),
    ])

    static let backup = render([
        ("Back up two folders, tagged", "lifeboat backup ~/Documents ~/Pictures --tag home"),
        ("The whole home folder, without caches, *.tmp files or other file systems",
         "lifeboat backup ~ --exclude-caches --exclude '*.tmp' --one-file-system"),
        ("Patterns to leave out, one per line, read from a file",
         "lifeboat backup ~ --exclude-file ~/.config/lifeboat/excludes"),
        ("See what a backup would store, writing nothing", "lifeboat backup -n ~/Documents"),
    ])

    static let snapshots = render([
        ("List every snapshot", "lifeboat snapshots"),
        ("Only those tagged home", "lifeboat snapshots --tag home"),
        ("The newest of each host and paths; exit 22 if one is older than 26 hours",
         "lifeboat snapshots --latest 1 --max-age 26h"),
        ("A repository on a USB disk, with its own password file",
         "lifeboat -r /mnt/usb/repo --password-file /etc/lifeboat/usb.pw snapshots"),
    ])

    static let ls = render([
        ("The files of the latest snapshot", "lifeboat ls latest"),
        ("One folder, with mode, owner, size and time", "lifeboat ls -l latest /home/me/Documents"),
        ("Everything below a folder, in an older snapshot", "lifeboat ls 4bd1c2a9 /home/me/Documents --recursive"),
    ])

    static let diff = render([
        ("What changed since an older snapshot (+ added, - removed, M modified)", "lifeboat diff 4bd1c2a9 latest"),
        ("Between two snapshots, as JSON lines", "lifeboat diff 4bd1c2a9 e2f0b917 --json"),
    ])

    static let restore = render([
        ("Restore the latest snapshot, then re-read every file to verify it",
         "lifeboat restore latest --target /tmp/restore --verify"),
        ("Only one folder: its contents land in /tmp/docs",
         "lifeboat restore latest:/home/me/Documents --target /tmp/docs"),
        ("Put a folder back in place, rewriting only the files that differ",
         "lifeboat restore latest -t / -i /home/me/Documents --overwrite if-changed"),
    ])

    static let dump = render([
        ("Write one file of the latest snapshot elsewhere",
         "lifeboat dump latest /home/me/Documents/notes.txt > /tmp/notes.txt"),
        ("A folder comes out as a tar archive", "lifeboat dump latest /home/me/Documents > /tmp/documents.tar"),
        ("Unpack a folder of an older snapshot with tar", "lifeboat dump 4bd1c2a9 /home/me/Pictures | tar -x -C /tmp"),
    ])

    static let find = render([
        ("Which snapshots hold PDF files", "lifeboat find '*.pdf'"),
        ("A pattern with a / matches whole paths", "lifeboat find '/home/me/Documents/taxes/*'"),
        ("Only in the latest snapshot tagged home", "lifeboat find --tag home --snapshot latest 'notes*'"),
    ])

    static let stats = render([
        ("Size of every snapshot when restored, and of the deduplicated data", "lifeboat stats"),
        ("The latest snapshot only, as JSON", "lifeboat stats latest --json"),
    ])

    static let check = render([
        ("Check the structure: index, snapshots, trees, packs", "lifeboat check"),
        ("Also read back and verify a random 10% of the data", "lifeboat check --read-data-subset 10%"),
        ("Read and verify all the data", "lifeboat check --read-data"),
        ("Monitoring: exit 22 when some host and paths have no snapshot in 26 hours", "lifeboat check --max-age 26h"),
    ])

    static let forget = render([
        ("Keep 7 daily, 4 weekly and 12 monthly snapshots, then prune",
         "lifeboat forget --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --prune"),
        ("Preview the same policy with short flags: nothing is removed", "lifeboat forget -n -d 7 -w 4 -m 12"),
        ("Keep the last 30 days, and every snapshot tagged keep", "lifeboat forget --keep-within 30d --keep-tag keep"),
        ("Remove one snapshot by its ID", "lifeboat forget 4bd1c2a9"),
    ])

    static let prune = render([
        ("Mark unused data; a run an hour or more later deletes it", "lifeboat prune"),
        ("Show what it would mark and delete", "lifeboat prune -n"),
        ("Free the space now: only while nothing else writes to the repository",
         "lifeboat prune --grace 0s --max-unused 0%"),
    ])

    static let repairIndex = render([
        ("Rebuild the index from the packs in storage", "lifeboat repair index"),
        ("Preview, reading the header of every pack", "lifeboat repair index -n --read-all-packs"),
    ])

    static let repairSnapshots = render([
        ("Preview which snapshots reference lost data", "lifeboat repair snapshots -n"),
        ("Write repaired copies and remove the damaged originals", "lifeboat repair snapshots --forget"),
    ])

    static let unlock = render([
        ("Remove the locks of processes that died", "lifeboat unlock"),
        ("Remove every lock: only when no other lifeboat uses the repository", "lifeboat unlock --remove-all"),
    ])

    static let keyList = render([
        ("List the keys (passwords); * marks the one in use", "lifeboat key list"),
        ("The keys of another repository, as JSON lines", "lifeboat -r /mnt/usb/repo key list --json"),
    ])

    static let keyAdd = render([
        ("Add a password, typed at the prompt", "lifeboat key add"),
        ("Add one read from a file (its first line)", "lifeboat key add --new-password-file /etc/lifeboat/alice.pw"),
    ])

    static let keyRemove = render([
        ("Remove a key by its ID (see key list); the one in use cannot be removed", "lifeboat key remove 6a3c5d21"),
        ("Any unique prefix of the ID will do", "lifeboat key remove 6a3c"),
    ])

    static let keyPasswd = render([
        ("Change the password of the key in use, typed at the prompt", "lifeboat key passwd"),
        ("Read the new password from a file", "lifeboat key passwd --new-password-file /etc/lifeboat/new.pw"),
    ])

    static let copy = render([
        ("Copy every snapshot to a repository on a USB disk",
         "lifeboat -r /mnt/usb/repo copy --from-repo /srv/lifeboat"),
        ("Only the snapshots tagged home", "lifeboat -r /mnt/usb/repo copy --from-repo /srv/lifeboat --tag home"),
        ("Only the latest snapshot", "lifeboat -r /mnt/usb/repo copy --from-repo /srv/lifeboat latest"),
    ])

    static let replicate = render([
        ("Bring every replica in the sites file up to date, once",
         "lifeboat replicate --config /etc/lifeboat/sites.yaml"),
        ("Keep them up to date as snapshots appear; SIGTERM stops it cleanly",
         "lifeboat replicate --config /etc/lifeboat/sites.yaml --watch"),
        ("Only the site named usb, of the sites file named by LIFEBOAT_SITES", "lifeboat replicate --site usb"),
    ])

    static let sitesStatus = render([
        ("Per site: reachable, snapshots missing, lag, data pending, last error",
         "lifeboat sites status --config /etc/lifeboat/sites.yaml"),
        ("Health check: exit 20 if a site is unreachable, 21 if one lags over 2h",
         "lifeboat sites status --max-lag 2h"),
        ("One JSON line per site", "lifeboat sites status --json"),
        ("What the running agent knows, without opening the sites", "lifeboat sites status --agent"),
    ])

    static let serve = render([
        ("Serve the repositories under /backup to the users of /backup/.htpasswd",
         "lifeboat serve --path /backup --listen 127.0.0.1:8000"),
        ("Append-only (nothing deleted), each user under /USER/ only, with /metrics",
         "lifeboat serve --path /backup --append-only --private-repos --prometheus"),
        ("HTTPS; add --listen :8443 to be reached from other hosts",
         "lifeboat serve --path /backup --tls --tls-cert cert.pem --tls-key key.pem"),
        ("Write the PID, so that kill -TERM $(cat /run/serve.pid) stops this one",
         "lifeboat serve --path /backup --pid-file /run/serve.pid"),
    ])

    static let proxy = render([
        ("Check a configuration and exit", "lifeboat proxy --config /etc/lifeboat/proxy.yml --check"),
        ("Run; kill -HUP $(cat /run/proxy.pid) reloads the file, kill -TERM drains",
         "lifeboat proxy --config /etc/lifeboat/proxy.yml --pid-file /run/proxy.pid"),
        ("Log events as JSON lines", "lifeboat proxy --config /etc/lifeboat/proxy.yml --json"),
    ])

    static let haRun = render([
        ("Check this node's ha: section and exit", "lifeboat ha run --config /etc/lifeboat/ha.yaml --check"),
        ("The same for another node's file", "lifeboat ha run --config /etc/lifeboat/ha-pg2.yaml --check"),
    ])

    static let haList = render([
        ("Members, roles, timeline, lag; exit 1 without a leader", "lifeboat ha list --config /etc/lifeboat/ha.yaml"),
        ("The same, as one JSON object", "lifeboat ha list --config /etc/lifeboat/ha.yaml --json"),
    ])

    static let haSwitchover = render([
        ("Hand the leader role to pg2 once it is caught up", "lifeboat ha switchover --config /etc/lifeboat/ha.yaml --to pg2"),
        ("Back to pg1 (ha.yaml here); give up after 60 s", "lifeboat ha switchover --config ha.yaml --to pg1 --timeout 60"),
    ])

    static let haPause = render([
        ("Maintenance: no automatic failover", "lifeboat ha pause --config /etc/lifeboat/ha.yaml"),
        ("The same, through another node's API", "lifeboat ha pause --config /etc/lifeboat/ha-pg2.yaml"),
    ])

    static let haResume = render([
        ("Automatic failover again", "lifeboat ha resume --config /etc/lifeboat/ha.yaml"),
        ("The same, through another node's API", "lifeboat ha resume --config /etc/lifeboat/ha-pg2.yaml"),
    ])

    static let configValidate = render([
        ("Check the plan file before the agent reads it", "lifeboat config validate"),
        ("Another file, findings as JSON lines", "lifeboat config validate --config ./lifeboat.yaml --json"),
    ])

    static let plan = render([
        ("What the agent will do, and whether each schedule meets its RPO", "lifeboat plan"),
        ("The same for another file, as JSON lines", "lifeboat plan --config ./lifeboat.yaml --json"),
    ])

    static let agent = render([
        ("Run the plan (LIFEBOAT_CONFIG or /etc/lifeboat/lifeboat.yaml)", "lifeboat agent"),
        ("Another plan, JSON logs; kill -HUP $(cat /run/agent.pid) reloads", "lifeboat agent --config ./lifeboat.yaml --json --pid-file /run/agent.pid"),
    ])

    static let status = render([
        ("Each source's RPO at each site; exit 22 when one is missed", "lifeboat status"),
        ("The same as one JSON object", "lifeboat status --json"),
    ])

    static let recoveryKit = render([
        ("Write the kit of the plan to a file, then print it and keep it offline", "lifeboat recovery-kit --output ./recovery-kit.md"),
        ("The same to standard output", "lifeboat recovery-kit"),
    ])

    static let drillRun = render([
        ("Run the drill documents-weekly now, from each of its sites", "lifeboat drill run documents-weekly"),
        ("From site usb only, keeping the sandbox to look at", "lifeboat drill run documents-weekly --site usb --keep"),
    ])

    static let drillList = render([
        ("Every drill of the plan with its last result at each site", "lifeboat drill list"),
        ("The same as JSON lines, one per drill and site", "lifeboat drill list --json"),
    ])

    static let drillReport = render([
        ("The newest report of a drill at each site, as Markdown", "lifeboat drill report documents-weekly"),
        ("The same as a self-contained web page", "lifeboat drill report documents-weekly --format html > /tmp/drill.html"),
    ])

    static let playbookLint = render([
        ("Check a playbook before it is needed", "lifeboat playbook lint playbooks/docs.yaml"),
        ("The same, with a variable the file leaves to the caller", "lifeboat playbook lint playbooks/docs.yaml --var db=shop"),
    ])

    static let playbookRun = render([
        ("Each step with its variables resolved; nothing runs",
         "lifeboat playbook run playbooks/docs.yaml --dry-run"),
        ("Run it: restore into /tmp/restore, verify, check",
         "lifeboat playbook run playbooks/docs.yaml --target /tmp/restore"),
    ])

    static let pgWalPush = render([
        ("Archive a segment, as archive_command does", "lifeboat pg wal-push /srv/pg/pg_wal/000000010000000000000003"),
        ("The same, printing a JSON line", "lifeboat pg wal-push /srv/pg/pg_wal/000000010000000000000003 --json"),
    ])

    static let pgWalFetch = render([
        ("Fetch a segment, as restore_command does", "lifeboat pg wal-fetch 000000010000000000000003 /tmp/wal"),
        ("The same from the site usb of the sites file",
         "lifeboat pg wal-fetch --site usb 000000010000000000000003 /tmp/wal"),
    ])

    static let pgBackup = render([
        ("A base backup of the cluster that PGHOST, PGPORT and PGUSER name", "lifeboat pg backup"),
        ("The same, tagged, printing a JSON line", "lifeboat pg backup --tag nightly --json"),
    ])

    static let pgRestore = render([
        ("The cluster as it was at a moment, into a new data directory",
         "lifeboat pg restore --time 2026-11-30T06:00:00Z --target /tmp/pg"),
        ("Everything archived, from the site usb, a copy that does not archive",
         "lifeboat pg restore --latest --site usb --no-archive --target /tmp/pg"),
    ])

    static let pgTimeline = render([
        ("The restorable range, base backups and WAL per timeline", "lifeboat pg timeline"),
        ("The same at the site usb, as JSON", "lifeboat pg timeline --site usb --json"),
    ])

    static let pgCheck = render([
        ("Check that no WAL is missing after any base backup", "lifeboat pg check"),
        ("The same at the site usb", "lifeboat pg check --site usb"),
    ])

    static let pgForget = render([
        ("Keep the newest 7 base backups and the WAL they need; show, remove nothing",
         "lifeboat pg forget --keep-last 7 --dry-run"),
        ("Keep a base backup per day for 14 days, then free the space",
         "lifeboat pg forget --keep-daily 14 && lifeboat prune"),
    ])

    static let completion = render([
        ("Bash, for every user", "lifeboat completion bash > /etc/bash_completion.d/lifeboat"),
        ("Zsh, into a folder of $fpath (fpath+=~/.zfunc in ~/.zshrc)", "lifeboat completion zsh > ~/.zfunc/_lifeboat"),
        ("Fish", "lifeboat completion fish > ~/.config/fish/completions/lifeboat.fish"),
    ])

    static let version = render([
        ("The version and the repository format", "lifeboat version"),
        ("The same as JSON", "lifeboat version --json"),
    ])

    /// "EXAMPLES:" then, per example, its description and the command line, indented.
    static let sqliteReplicate = render([
        ("Follow a database's WAL into the repository until SIGTERM", "lifeboat sqlite replicate /var/lib/app/app.db"),
        ("Store new transactions every 500 ms", "lifeboat sqlite replicate /var/lib/app/app.db --interval 500ms"),
    ])

    static let sqliteRestore = render([
        ("Everything stored, into a new file (checked before it appears)", "lifeboat sqlite restore /var/lib/app/app.db --latest --target /tmp/app.db"),
        ("The same, as JSON", "lifeboat sqlite restore /var/lib/app/app.db --latest -t /tmp/a.db --json"),
    ])

    static let sqliteTimeline = render([
        ("Generations, snapshots, WAL records and holes of every database", "lifeboat sqlite timeline"),
        ("One database, as JSON", "lifeboat sqlite timeline /var/lib/app/app.db --json"),
    ])

    static let dbRestore = render([
        ("A source's newest dump into a new target, checked", "lifeboat db restore app --target /tmp/app.db"),
        ("The same, as JSON", "lifeboat db restore app --target /tmp/app.db --json"),
    ])

    static func render(_ list: [(String, String)]) -> String {
        "EXAMPLES:\n" + list.map { "  \($0.0):\n    $ \($0.1)" }.joined(separator: "\n\n")
    }
}
