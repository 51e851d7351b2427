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
    public var firstTime: String? = nil
    public var lastTime: String? = nil
    /// SHA-256 of the file (hex): a second push of the same name must bring the same bytes.
    public var sha256: String
    /// Timeline histories: the file's text (a few lines), so that the chain is known from the listing alone.
    public var history: String? = nil
    public init(name: String, size: UInt64, sha256: String) { self.name = name; self.size = size; self.sha256 = sha256 }
    enum CodingKeys: String, CodingKey { case name, size, end, firstTime = "first_time", lastTime = "last_time", sha256, history }
}
