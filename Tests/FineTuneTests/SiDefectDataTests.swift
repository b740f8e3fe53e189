import Foundation
import Testing
import Tape
import Atoms
import Relax
@testable import FineTune

/// The committed GPAW data (Fixtures/data/si-defects): every file read with relaxft's own reader.
@Suite struct SiDefectDataTests {
    static let dir = repoRoot.appendingPathComponent("Fixtures/data/si-defects").path

    static var splits: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])
            .filter { $0.hasSuffix(".extxyz") && !$0.hasPrefix("trajectories-") }.map { String($0.dropLast(7)) }.sorted()
    }

    /// Shortest minimum-image distance between two atoms of a structure.
    func shortestDistance(_ x: Tensor, _ s: Structure) -> Double {
        var best = Double.infinity
        for i in 0..<s.count {
            for j in (i + 1)..<s.count {
                let d = Tensor(shape: [1, 3], (0..<3).map { x[j, $0] - x[i, $0] })
                let m = Structure.minimumImage(d, cell: s.cell, pbc: s.pbc)
                best = min(best, (m.array.map { $0 * $0 }.reduce(0, +)).squareRoot())
            }
        }
        return best
    }

    @Test func splitsAreReadableAndConsistentWithTheirTrajectories() throws {
        #expect(Self.splits.contains("tiny"))
        for split in Self.splits {
            let path = Self.dir + "/\(split).extxyz"
            let frames = try StructureIO.read(path)
            let examples = try RelaxationDataset.examples(from: frames, source: path)
            let traj = try StructureIO.read(Self.dir + "/trajectories-\(split).extxyz")
            var lastFrame: [String: Structure] = [:]
            for t in traj { if let id = t.info["structure_id"]?.stringValue { lastFrame[id] = t } }
            for (f, ex) in zip(frames, examples) {
                let id = f.info["structure_id"]?.stringValue ?? "?"
                #expect(Set(f.numbers).isSubset(of: [6, 14]), "\(split) \(id): species")
                #expect(split == "tiny" ? (7...9).contains(f.count) : (62...66).contains(f.count), "\(split) \(id): \(f.count) atoms")
                #expect(f.info["converged"]?.boolValue == true, "\(split) \(id)")
                #expect(shortestDistance(f.positions, f) >= 1.8, "\(split) \(id): initial atoms closer than 1.8 Å")
                #expect(shortestDistance(ex.target, f) >= 1.8, "\(split) \(id): relaxed atoms closer than 1.8 Å")
                // The last ionic step of the trajectory is the relaxed structure, with forces below fmax.
                guard let last = lastFrame[id], let forces = last.forces else {
                    Issue.record("\(split) \(id): no trajectory"); continue
                }
                #expect(last.positions.maxAbsDifference(ex.target) == 0, "\(split) \(id): pos_relaxed is not the last ionic step")
                #expect(maxRowNorm(forces) < 0.05, "\(split) \(id): fmax \(maxRowNorm(forces))")
            }
        }
    }
    /// Counts: each split file holds exactly the converged structures `results.json` lists for it, each trajectory
    /// has `dft_steps + 1` frames (step 0 = initial), and the issue's minimum sizes hold (tiny ≥ 10, large ≥ 60;
    /// train, val and test each hold every seen kind; test-unseen only kinds train never saw).
    @Test func countsMatchTheJobRecord() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.dir + "/results.json"))
        let record = try #require(try JSONSerialization.jsonObject(with: data) as? [String: [String: Any]])
        var kindsBySplit: [String: Set<String>] = [:]
        var countBySplit: [String: Int] = [:]
        for split in Self.splits {
            let frames = try StructureIO.read(Self.dir + "/\(split).extxyz")
            let expected = record.values.filter { ($0["split"] as? String) == split && ($0["converged"] as? Bool) == true }
            #expect(frames.count == expected.count, "\(split): \(frames.count) structures, results.json lists \(expected.count)")
            let ids = Set(frames.compactMap { $0.info["structure_id"]?.stringValue })
            #expect(ids == Set(expected.compactMap { $0["id"] as? String }), "\(split): structure ids differ from results.json")
            var steps: [String: [Int]] = [:]
            for t in try StructureIO.read(Self.dir + "/trajectories-\(split).extxyz") {
                if let id = t.info["structure_id"]?.stringValue, let k = t.info["step"]?.intValue { steps[id, default: []].append(k) }
            }
            for f in frames {
                let id = f.info["structure_id"]?.stringValue ?? "?"
                let n = try #require(f.info["dft_steps"]?.intValue, "\(split) \(id): no dft_steps")
                #expect(steps[id] == Array(0...n), "\(split) \(id): trajectory steps are not 0...\(n)")
                if let kind = f.info["defect"]?.stringValue { kindsBySplit[split, default: []].insert(kind) }
            }
            countBySplit[split] = frames.count
        }
        let large = countBySplit.filter { $0.key != "tiny" }.values.reduce(0, +)
        #expect(countBySplit["tiny", default: 0] >= 10)
        #expect(large >= 60, "\(large) large structures")
        let seen = kindsBySplit["train"] ?? []
        #expect(seen.count >= 5, "train kinds: \(seen.sorted())")
        for split in ["val", "test"] { #expect(kindsBySplit[split] == seen, "\(split) kinds: \(kindsBySplit[split] ?? [])") }
        #expect(!(kindsBySplit["test-unseen"] ?? []).isEmpty && (kindsBySplit["test-unseen"] ?? []).isDisjoint(with: seen))
    }
}
