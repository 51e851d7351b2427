import Foundation
import LifeboatCore
import LifeboatRepository
import LifeboatWAL

/// The PostgreSQL records of a repository for one cluster (a database system identifier): every archived WAL file
/// with the record that holds it, the base backups, and the chain they form. Built from the snapshot listing alone
/// (each record carries what the chain needs), so `pg timeline` and `pg check` read no pack.
public struct WALCatalog: Sendable {
    public struct Entry: Sendable {
        public var record: ID
        public var file: WALFileRecord
        public var archived: Date
        /// Later records holding the same bytes under the same name (stored again because this record's data
        /// had gone from the index): read when this record cannot be.
        public var copies: [ID] = []
    }
    public struct Backup: Sendable {
        public var id: ID
        public var snapshot: Snapshot
        public var point: BaseBackupPoint
    }
    public let system: String
    public let size: SegmentSize
    /// False while the cluster's records hold timeline histories only (archived before any segment): the size is
    /// then the default, and nothing is checked against it.
    public private(set) var sizeKnown = true
    /// Records of the repository that could not be read (damaged, or unreadable here): a file not found may be in
    /// one of them, so a miss is not proof of absence (wal-fetch then fails instead of ending recovery).
    public var unreadable = 0
    public private(set) var files: [String: Entry] = [:]
    /// Names archived twice with different contents (the first one stays the one restored).
    public private(set) var conflicts: [String] = []
    public private(set) var backups: [Backup] = []
    public private(set) var chain: WALChain
    /// Records that could not be used, with why (a damaged or foreign record: named, never fatal to the others).
    public private(set) var problems: [String] = []
    /// Every WAL record of the cluster with the names of its files (retention removes whole records).
    public private(set) var walRecords: [(id: ID, names: [String])] = []
    /// When the newest WAL file was archived.
    public private(set) var newestArchive: Date?
    /// The newest transaction time in the archive.
    public var newestTransaction: Date? { files.values.compactMap { $0.file.lastTime.flatMap(Timestamp.parse) }.max() }

    init(system: String, size: SegmentSize) {
        self.system = system; self.size = size; chain = WALChain(size: size)
    }

    /// The catalogs of every cluster whose records the listing holds, by system identifier.
    public static func build(_ snapshots: [(id: ID, snapshot: Snapshot)]) -> [String: WALCatalog] {
        var out: [String: WALCatalog] = [:]
        var sizeless: [(ID, Snapshot, DatabaseRecord)] = []
        for (id, s) in snapshots.sorted(by: { ($0.snapshot.date, $0.id) < ($1.snapshot.date, $1.id) }) {
            guard let kind = s.kind, kind == "pg-wal" || kind == "pg-base", let db = s.database, db.engine == "postgresql",
                  !db.system.isEmpty, db.system.count <= 20, UInt64(db.system) != nil else { continue }
            guard let size = SegmentSize(db.segmentSize) else {
                // Histories archived before any segment of their cluster: size 0, placed once the sizes are known.
                if db.segmentSize == 0, kind == "pg-wal" { sizeless.append((id, s, db)) }
                continue
            }
            var c = out[db.system] ?? WALCatalog(system: db.system, size: size)
            guard c.size == size else {
                c.problems.append("record \(id.short) says the segment size is \(db.segmentSize), not \(c.size.bytes): skipped")
                out[db.system] = c
                continue
            }
            if kind == "pg-wal" { c.addWAL(id, s, db) } else { c.addBackup(id, s, db) }
            out[db.system] = c
        }
        for (id, s, db) in sizeless {
            var c = out[db.system] ?? { var n = WALCatalog(system: db.system, size: .default); n.sizeKnown = false; return n }()
            c.addWAL(id, s, db)
            out[db.system] = c
        }
        return out
    }

    mutating func addWAL(_ id: ID, _ s: Snapshot, _ db: DatabaseRecord) {
        walRecords.append((id, (db.files ?? []).map(\.name)))
        noteArchived(record: id, files: db.files ?? [], at: s.date)
    }

    /// Adds the files of a record just written (the push helper keeps its catalog without listing again).
    public mutating func noteArchived(record id: ID, files list: [WALFileRecord], at date: Date) {
        for f in list {
            guard let name = WALFileName(f.name) else {
                problems.append("record \(id.short) holds \"\(f.name.prefix(80))\", which is not a WAL file name: skipped")
                continue
            }
            if let old = files[f.name] {
                if old.file.sha256 == f.sha256 { files[f.name]!.copies.append(id) } else { conflicts.append(f.name) }
                continue
            }
            files[f.name] = Entry(record: id, file: f, archived: date)
            newestArchive = max(newestArchive ?? date, date)
            switch name.kind {
            case .segment:
                guard let number = name.segmentNumber(size), let end = f.end.flatMap(LSN.init) else {
                    problems.append("record \(id.short): segment \(f.name) has no valid end position: skipped")
                    continue
                }
                chain.add(ArchivedSegment(name: f.name, timeline: name.timeline, number: number, end: end,
                                          lastRecord: f.lastRecord.flatMap(LSN.init), firstTime: f.firstTime.flatMap(Timestamp.parse), lastTime: f.lastTime.flatMap(Timestamp.parse)))
            case .history:
                do {
                    chain.addHistory(timeline: name.timeline, try TimelineSwitch.parse(Array((f.history ?? "").utf8)))
                } catch {
                    problems.append("record \(id.short): timeline history \(f.name): \(error)")
                }
            case .backup, .partial:
                break
            }
        }
    }

    mutating func addBackup(_ id: ID, _ s: Snapshot, _ db: DatabaseRecord) {
        guard let tli = db.timeline, tli > 0, let start = db.startLSN.flatMap(LSN.init), let stop = db.stopLSN.flatMap(LSN.init),
              start <= stop, let stopTime = db.stopTime.flatMap(Timestamp.parse) else {
            problems.append("base backup \(id.short) lacks its timeline, start, stop or stop time: it cannot be restored")
            return
        }
        backups.append(Backup(id: id, snapshot: s, point: BaseBackupPoint(id: id.short, timeline: tli, start: start, stop: stop, stopTime: stopTime)))
    }

    public var points: [BaseBackupPoint] { backups.map(\.point) }

    /// The cluster of a repository: the only one, or the one named (`--cluster`); an error lists the choices.
    public static func select(_ catalogs: [String: WALCatalog], system: String?) throws -> WALCatalog {
        if let system {
            guard let c = catalogs[system] else {
                throw LifeboatError(.notFound, "the repository holds no PostgreSQL records of database system \(system)\(catalogs.isEmpty ? "" : " (it holds \(catalogs.keys.sorted().joined(separator: ", ")))")")
            }
            return c
        }
        guard let only = catalogs.values.first else {
            throw LifeboatError(.notFound, "the repository holds no PostgreSQL WAL or base backup (archive_command = 'lifeboat pg wal-push %p' and `lifeboat pg backup` write them)")
        }
        guard catalogs.count == 1 else {
            throw LifeboatError.invalid("the repository holds the records of \(catalogs.count) PostgreSQL clusters (\(catalogs.keys.sorted().joined(separator: ", "))): choose one with --cluster")
        }
        return only
    }
}
