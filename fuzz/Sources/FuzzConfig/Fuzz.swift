import LifeboatFailover
import LifeboatSites

/// Any text as a sites file and as a proxy configuration: a configuration or an error with line:column.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    _ = try? SitesConfig.parse(text, path: "fuzz.yaml")
    _ = try? ProxyConfig.parse(text, path: "fuzz.yaml")
    return 0
}
