/// What a database record of the repository holds, beside its tree (FORMAT.md, "Database records").
///
/// Records are snapshots with a `kind`: `pg-wal` (a batch of archived WAL files, one file per node of its tree) and
/// `pg-base` (a base backup: the data directory's tree, plus what PostgreSQL's backup API returned). They travel
/// with snapshots (copy, replication, prune keep their data) but file commands (`snapshots`, `forget`, `latest`,
/// `restore`) do not show them.
public struct DatabaseRecord: Codable, Sendable, Equatable {
    /// "postgresql".
    public var engine: String
    /// The database system identifier (`pg_control`), in decimal: which cluster the record belongs to.
    public var system: String
    public var segmentSize: UInt64
    /// Base backups: the timeline, WAL positions (`X/Y`), the server's stop time, `backup_label`, `tablespace_map`,
    /// server version (`server_version_num`), the data directory backed up, and whether it came from a standby.
    public var timeline: UInt32? = nil
    public var startLSN: String? = nil
    public var stopLSN: String? = nil
    public var stopTime: String? = nil
    public var label: String? = nil
    public var tablespaceMap: String? = nil
    public var version: Int? = nil
    public var dataDirectory: String? = nil
    public var standby: Bool? = nil
    /// WAL records: the files, in the order of the tree's nodes.
    public var files: [WALFileRecord]? = nil

    public init(engine: String = "postgresql", system: String, segmentSize: UInt64) {
        self.engine = engine; self.system = system; self.segmentSize = segmentSize
    }

    enum CodingKeys: String, CodingKey {
        case engine, system, segmentSize = "segment_size", timeline, startLSN = "start_lsn", stopLSN = "stop_lsn"
        case stopTime = "stop_time", label, tablespaceMap = "tablespace_map", version, dataDirectory = "data_directory"
        case standby, files
    }
}

/// One archived WAL file: a segment (with the positions and transaction times read from it), a timeline history,
/// a backup history or a partial segment.
public struct WALFileRecord: Codable, Sendable, Equatable {
    public var name: String
    public var size: UInt64
    /// Segments: where the last whole record in it ends (`X/Y`), and the first and last commit or abort time.
    public var end: String? = nil
    /// Segments: where that record starts (records stored before format 1.x lack it).
    public var lastRecord: String? = nil
    public var firstTime: String? = nil
    public var lastTime: String? = nil
    /// SHA-256 of the file (hex): a second push of the same name must bring the same bytes.
    public var sha256: String
    /// Timeline histories: the file's text (a few lines), so that the chain is known from the listing alone.
    public var history: String? = nil
    public init(name: String, size: UInt64, sha256: String) { self.name = name; self.size = size; self.sha256 = sha256 }
    enum CodingKeys: String, CodingKey { case name, size, end, lastRecord = "last_record", firstTime = "first_time", lastTime = "last_time", sha256, history }
}

/// What an SQLite record holds, beside its tree (FORMAT.md, "SQLite records"): `sqlite-snapshot` (the database
/// file as it was at a position of its WAL) or `sqlite-wal` (a frame log: the transactions committed after that,
/// each with the time it was seen). A generation is one unbroken history of a database: a snapshot, then WAL
/// records numbered from 0; a restore takes a snapshot and the records after it.
public struct SQLiteRecord: Codable, Sendable, Equatable {
    /// The database: its absolute path on the host that follows it.
    public var database: String
    /// 16 hexadecimal digits, new whenever the history of the WAL is broken (a restart of the follower that
    /// cannot continue, a database file replaced).
    public var generation: String
    /// WAL records: its number in the generation (0, 1, …). Snapshots: the number of the first WAL record that
    /// follows them (the snapshot holds every transaction of the records before).
    public var seq: Int
    public var pageSize: Int
    /// The WAL cycle (its salts, hexadecimal) and the frames of it: WAL records, the frames they hold; snapshots,
    /// the position they were taken at (`lastFrame` 0 when no frame of the cycle was in them).
    public var cycle: String
    public var firstFrame: Int
    public var lastFrame: Int
    /// The WAL's running checksum after `lastFrame` (hexadecimal), by which a follower started again checks that
    /// the WAL it finds continues the record.
    public var checksum: String
    /// The database size in pages after the last transaction.
    public var pages: UInt32
    /// WAL records: how many transactions, and when the first and last were seen committed.
    public var transactions: Int? = nil
    public var firstTime: String? = nil
    public var lastTime: String? = nil

    public init(database: String, generation: String, seq: Int, pageSize: Int, cycle: String, firstFrame: Int, lastFrame: Int,
                checksum: String, pages: UInt32) {
        self.database = database; self.generation = generation; self.seq = seq; self.pageSize = pageSize; self.cycle = cycle
        self.firstFrame = firstFrame; self.lastFrame = lastFrame; self.checksum = checksum; self.pages = pages
    }

    enum CodingKeys: String, CodingKey {
        case database, generation, seq, pageSize = "page_size", cycle, firstFrame = "first_frame", lastFrame = "last_frame"
        case checksum, pages, transactions, firstTime = "first_time", lastTime = "last_time"
    }
}
