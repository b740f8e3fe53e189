import Foundation
import Testing
import Atoms
import Potentials
import Tape
@testable import Dynamics

@Suite("Segments and RDF tables")
struct SegmentTests {
    /// Stable replicas run every step and are sampled every interval; a replica that breaks the criterion
    /// stops at the check that finds it, with that frame sampled only when asked.
    @Test func segmentsStopUnstableReplicasAndSampleStableOnes() {
        let si = silicon64()
        var hot = si
        hot.positions[0, 0] += 0.6  // a bond of atom 0 stretched past the threshold from the start
        for sampleUnstable in [false, true] {
            let md = MolecularDynamics(starts: [si, hot], potential: StillingerWeber(), settings: MDSettings(timestep: 1, temperature: 300), seed: 4)
            let monitor = StabilityMonitor(bonds: BondSet.detect(si), criterion: InstabilityCriterion(maxBondDeviation: 0.3), structure: si)
            var calls = 0
            let res = md.runSegment([0, 1], steps: 30, sampleInterval: 10, monitor: monitor, checkInterval: 5, sampleUnstable: sampleUnstable) { _, _ in calls += 1 }
            #expect(calls == 30)
            #expect(res.stepsTaken == [30, 5])
            #expect(res.unstableStep[0] == nil && res.unstableStep[1] == 5)
            #expect(res.unstableAtoms[1].contains(0))
            #expect(res.samples[0].map { $0.info["step"]?.intValue } == [10, 20, 30])
            #expect(res.samples[1].map { $0.info["step"]?.intValue } == (sampleUnstable ? [5] : []))
            #expect(res.maxBondDeviation[1] > 0.3 && res.maxBondDeviation[0] < 0.3)
        }
    }

    @Test func rdfTablesRoundTripAndReportBadLines() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rdf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let radii = [0.5, 1.0, 1.5], g = [0.0, 1.25, 0.987654321], h = [0.1, 0.2, 0.3]
        let path = dir.appendingPathComponent("rdf.csv").path
        try RDFTable.text(radii: radii, columns: [("g_model", h), ("g_reference", g)]).write(toFile: path, atomically: true, encoding: .utf8)
        let back = try RDFTable.read(path)
        #expect(back.radii == radii && back.values == g, "g_reference is chosen by name")
        #expect(try RDFTable.read(path, column: "g_model").values == h)
        #expect(throws: RDFTable.Error.self) { try RDFTable.read(path, column: "g_x") }
        for (text, message) in [("0.1,1\n", ":1: expected a header"), ("r,g\n0.1,1\n0.2\n", ":3: expected 2 numbers"),
                                ("r,g\n0.2,1\n0.1,1\n", "ascending"), ("r,g\n0.1,nan\n", ":2: expected 2 numbers")] {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            do {
                _ = try RDFTable.read(path)
                Issue.record("no error for \(text)")
            } catch let e as RDFTable.Error {
                #expect(e.message.contains(message), "\(e.message)")
            }
        }
    }
}
