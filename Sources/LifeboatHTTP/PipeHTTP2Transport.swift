import Foundation
import Glibc
import LifeboatStorage
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import Synchronization

/// HTTP/2 with prior knowledge over the standard input and output of a child process: how
/// `rclone serve restic --stdio` talks (as restic's rclone backend does). Requests are multiplexed
/// as HTTP/2 streams over the one pair of pipes.
public final class PipeHTTP2Transport: HTTPTransport {
    public let origin: String
    let process: Process
    let channel: any Channel
    let multiplexer: NIOLoopBound<NIOHTTP2Handler.StreamMultiplexer>
    let stderrTail = TextTail()
    let readTimeout: Double

    /// Starts `executable arguments…` and speaks HTTP/2 to it.
    public init(executable: String, arguments: [String], name: String, options: HTTPOptions = .fromEnvironment(),
                environment: [String: String]? = nil) async throws {
        origin = name
        readTimeout = options.readTimeout
        var toChild: [Int32] = [0, 0], fromChild: [Int32] = [0, 0]
        guard pipe(&toChild) == 0, pipe(&fromChild) == 0 else {
            throw StorageError(.permanent, "cannot create pipes for \(name): \(String(cString: strerror(errno)))")
        }
        // Our ends must not leak into the child (it would never see end-of-file on its input).
        _ = fcntl(toChild[1], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fromChild[0], F_SETFD, FD_CLOEXEC)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        if let environment { p.environment = environment }
        p.standardInput = FileHandle(fileDescriptor: toChild[0], closeOnDealloc: false)
        p.standardOutput = FileHandle(fileDescriptor: fromChild[1], closeOnDealloc: false)
        let errPipe = Pipe()
        p.standardError = errPipe
        let tail = stderrTail
        errPipe.fileHandleForReading.readabilityHandler = { h in
            let d = h.availableData
            if d.isEmpty { h.readabilityHandler = nil; return }
            tail.append(String(decoding: d, as: UTF8.self))
        }
        do {
            try p.run()
        } catch {
            for fd in toChild + fromChild { close(fd) }
            throw StorageError(.permanent, "cannot start \(executable): \(error) (is it installed?)")
        }
        close(toChild[0])
        close(fromChild[1])
        process = p
        let (channel, mux) = try await NIOPipeBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .takingOwnershipOfDescriptors(input: fromChild[0], output: toChild[1]) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let m = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                        mode: .client,
                        connectionConfiguration: .init(),
                        streamConfiguration: .init(),
                        inboundStreamInitializer: { $0.close() })
                    return (channel, NIOLoopBound(m, eventLoop: channel.eventLoop))
                }
            }
        self.channel = channel
        multiplexer = mux
    }

    deinit {
        if process.isRunning { process.terminate() }
    }

    public func shutdown() async {
        try? await channel.close()
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { try? await Task.sleep(nanoseconds: 20_000_000) }
        if process.isRunning { process.terminate() }
    }

    func failure(_ what: String) -> StorageError {
        let tail = stderrTail.text.trimmingCharacters(in: .whitespacesAndNewlines)
        let last = tail.split(separator: "\n").suffix(3).joined(separator: " | ")
        if !process.isRunning {
            return StorageError(.permanent, "\(what): \(origin) exited (status \(process.terminationStatus))\(last.isEmpty ? "" : ": \(last)")")
        }
        return StorageError(.transient, "\(what)\(last.isEmpty ? "" : " (\(origin): \(last))")")
    }

    public func send(_ spec: HTTPRequestSpec) async throws -> HTTPResponseSpec {
        let what = "\(spec.method) \(spec.target)"
        if !process.isRunning { throw failure(what) }
        let loop = channel.eventLoop
        let promise = loop.makePromise(of: HTTPResponseSpec.self)
        let isHead = spec.method == "HEAD"
        var head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: spec.method), uri: spec.target)
        head.headers.add(name: "host", value: "localhost")
        for (k, v) in spec.headers { head.headers.add(name: k, value: v) }
        let body = spec.body
        if let body { head.headers.replaceOrAdd(name: "content-length", value: "\(body.count)") }
        let requestHead = head
        let mux = multiplexer
        let timeout = TimeAmount.milliseconds(Int64(readTimeout * 1000))
        loop.execute {
            mux.value.createStreamChannel { stream in
                stream.eventLoop.makeCompletedFuture {
                    try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .http))
                    try stream.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise, isHead: isHead))
                }
            }.whenComplete { result in
                switch result {
                case .failure(let e): promise.fail(e)
                case .success(let stream):
                    stream.write(HTTPClientRequestPart.head(requestHead), promise: nil)
                    if let body { stream.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(data: body))), promise: nil) }
                    stream.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
                    let timer = stream.eventLoop.scheduleTask(in: timeout) {
                        promise.fail(StorageError(.transient, "\(what): no answer from the child process (timeout)"))
                        stream.close(promise: nil)
                    }
                    promise.futureResult.whenComplete { _ in timer.cancel() }
                }
            }
        }
        do {
            return try await promise.futureResult.get()
        } catch let e as StorageError {
            throw e
        } catch {
            throw failure("\(what): \(error)")
        }
    }
}

/// Gathers one HTTP response on a stream channel.
final class ResponseCollector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    let promise: EventLoopPromise<HTTPResponseSpec>
    let isHead: Bool
    var head: HTTPResponseHead?
    var body = ByteBuffer()
    var done = false

    init(promise: EventLoopPromise<HTTPResponseSpec>, isHead: Bool) {
        self.promise = promise
        self.isHead = isHead
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body(var b): body.writeBuffer(&b)
        case .end:
            guard let head, !done else { return }
            done = true
            let headers = head.headers.map { ($0.name, $0.value) }
            if !isHead, let expected = head.headers.first(name: "content-length").flatMap(Int.init), expected != body.readableBytes {
                promise.fail(StorageError(.transient, "the body was cut short (\(body.readableBytes) of \(expected) bytes)"))
            } else {
                promise.succeed(HTTPResponseSpec(status: Int(head.status.code), headers: headers, body: Data(buffer: body)))
            }
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !done { done = true; promise.fail(error) }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done { done = true; promise.fail(StorageError(.transient, "the stream closed before the answer was complete")) }
    }
}

/// The last few kilobytes a child process wrote to its standard error.
final class TextTail: Sendable {
    let state = Mutex("")
    func append(_ s: String) {
        state.withLock { t in
            t += s
            if t.count > 4000 { t = String(t.suffix(2000)) }
        }
    }
    var text: String { state.withLock { $0 } }
}
