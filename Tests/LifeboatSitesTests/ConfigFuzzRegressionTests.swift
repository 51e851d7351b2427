import Testing
import LifeboatSites
import LifeboatTestSupport

/// Seeds and crashing inputs `make fuzz` found for the YAML readers, replayed: a configuration or an error.
@Suite struct ConfigFuzzRegressionTests {
    @Test func sitesFileInputs() {
        let inputs = fuzzInputs("config")
        #expect(!inputs.isEmpty)
        for i in inputs { _ = try? SitesConfig.parse(String(decoding: i, as: UTF8.self), path: "fuzz.yaml") }
    }

    @Test(arguments: ["1e300", "inf", "nan", "1e11", "-1", "0", "10d"])
    func hostileIntervalsAreLineColumnErrors(_ v: String) {
        let text = "sites:\n  - {name: a, repository: /r, password_file: /p, role: primary}\n  - {name: b, repository: /s, password_file: /p, role: replica}\nreplication:\n  interval: \(v)\n"
        do {
            let c = try SitesConfig.parse(text, path: "s.yaml")
            #expect(v == "10d", "accepted \(v): \(c.interval)")
        } catch {
            #expect("\(error)".contains("s.yaml:5:"), "\(error)")
        }
    }
}
