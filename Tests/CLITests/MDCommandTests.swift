import Foundation
import Testing
import Atoms
import Dynamics
import Potentials
import Tape

/// A scratch directory holding si64.extxyz, the 64-atom diamond cell at the SW lattice constant.
func siliconScratch() throws -> Scratch {
    let dir = try Scratch()
    try StructureIO.write([Structure.diamond(a: 5.431, repeats: 2)], dir.path("si64.extxyz"))
    return dir
}

@Suite("relaxft md", .serialized)
struct MDCommandTests {
    /// Trajectory frames are the library's replicas step for step; the RDF is the mean over the written frames
    /// after the first; the JSON summary counts what was written.
    @Test func runsAsTheLibraryDoes() throws {
        let dir = try siliconScratch()
        defer { dir.remove() }
        let run = try dir.run(["md", "si64.extxyz", "--potential", "sw", "--thermostat", "none", "--temperature", "300", "--timestep", "1",
                               "--steps", "40", "--replicas", "2", "-o", "traj.xyz", "--interval", "20", "--rdf", "rdf.csv", "--seed", "5", "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let s = Structure.diamond(a: 5.431, repeats: 2)
        let md = MolecularDynamics(starts: [s, s], potential: StillingerWeber(), settings: MDSettings(timestep: 1, temperature: 300, thermostat: .none), seed: 5)
        var frames: [Structure] = []
        for k in 1...40 {
            md.step([0, 1])
            if k % 20 == 0 { frames += [md.frame(0), md.frame(1)] }
        }
        let traj = try StructureIO.read(dir.path("traj.xyz"))
        try #require(traj.count == 6)
        #expect(traj.map { $0.info["step"]?.intValue } == [0, 0, 20, 20, 40, 40])
        #expect(traj.map { $0.info["replica"]?.intValue } == [0, 1, 0, 1, 0, 1])
        for r in 0..<2 {
            #expect(traj[4 + r].positions.maxAbsDifference(md.positions(r)) < 1e-12)
            #expect(abs(traj[4 + r].energy! - md.replicas[r].potentialEnergy) < 1e-9)
        }
        #expect(traj[0].positions == s.positions)

        let table = try RDFTable.read(dir.path("rdf.csv"))
        #expect(table.radii.count == 100 && abs(table.radii[0] - 0.025) < 1e-12)
        let expected = RadialDistribution.average(frames, settings: RDFSettings())
        #expect(zip(table.values, expected).allSatisfy { abs($0 - $1) < 1e-6 * max(1, abs($1)) })

        let j = try #require(run.json.first)
        #expect(j["replicas"] as? Int == 2 && j["steps"] as? Int == 40)
        #expect(j["trajectory_frames"] as? Int == 6 && j["rdf_frames"] as? Int == 4)
        #expect(j["unstable_replicas"] as? Int == 0)
        #expect((j["ps_per_day"] as? Double).map { $0 > 0 } == true)
        let reps = try #require(j["replica_results"] as? [[String: Any]])
        #expect(reps.count == 2)
        #expect(reps.allSatisfy { ($0["max_energy_drift_per_atom"] as? Double).map { $0 < 1e-3 } == true })
        #expect(reps.allSatisfy { $0["stable_time_ps"] as? Double == 0.04 })
        #expect(run.stderr.contains("ps/day"))
    }

    /// Without --json a header and progress lines with the speed go to stdout; replicas that break the bond
    /// criterion with --stop-unstable stop early (exit code 1) and their times are summarised.
    @Test func progressLinesAndEarlyStops() throws {
        let dir = try siliconScratch()
        defer { dir.remove() }
        let ok = try dir.run(["md", "si64.extxyz", "--steps", "20", "--log-interval", "10", "--thermostat", "nose-hoover", "--temperature", "500"])
        #expect(ok.status == 0, "\(ok.stderr)")
        let lines = ok.stdout.split(separator: "\n")
        #expect(lines.contains { $0.contains("ps/day") && $0.contains("step") })
        #expect(lines.filter { $0.trimmingCharacters(in: .whitespaces).hasPrefix("10 ") || $0.trimmingCharacters(in: .whitespaces).hasPrefix("20 ") }.count == 2)
        #expect(ok.stdout.contains("conserved-energy max deviation"))

        let broken = try dir.run(["md", "si64.extxyz", "--steps", "100", "--replicas", "3", "--temperature", "800", "--bond-threshold", "0.01",
                                  "--stop-unstable", "--json"])
        #expect(broken.status == 1, "\(broken.stderr)")
        let j = try #require(broken.json.first)
        #expect(j["unstable_replicas"] as? Int == 3)
        let median = try #require(j["median_stable_time_ps"] as? Double)
        #expect(median > 0 && median < 0.1)
        let reps = try #require(j["replica_results"] as? [[String: Any]])
        #expect(reps.allSatisfy { ($0["steps"] as? Int).map { $0 < 100 } == true && $0["unstable_at_ps"] as? Double != nil })

        // Diamond bonds are 2.35 Å: a 2.5 Å minimum distance is broken at the first check.
        let close = try dir.run(["md", "si64.extxyz", "--steps", "30", "--bond-threshold", "100", "--min-distance", "2.5", "--stop-unstable"])
        #expect(close.status == 1)
        #expect(close.stdout.contains("replica 0: 10 steps") && close.stdout.contains("unstable at 0.01 ps (two atoms closer than 2.5 Å)"), "\(close.stdout)")
    }

    /// Bad options and inputs: exit code 2, a message naming the problem, no output file.
    @Test func badInputExitsTwoAndWritesNothing() throws {
        let dir = try siliconScratch()
        defer { dir.remove() }
        let cases: [([String], String)] = [
            (["md", "si64.extxyz", "--thermostat", "berendsen", "-o", "t.xyz"], "--thermostat expects langevin, nose-hoover or none"),
            (["md", "si64.extxyz", "-o", "t.cif"], "trajectories are extended XYZ"),
            (["md", "missing.extxyz", "-o", "t.xyz"], "missing.extxyz"),
            (["md", "si64.extxyz", "--steps", "-3", "-o", "t.xyz"], "--steps"),
            (["md", "si64.extxyz", "--potential", "sw:sigmaa=2", "-o", "t.xyz"], "sw has no parameter 'sigmaa'"),
            (["md", "si64.extxyz", "--timestep", "0", "-o", "t.xyz"], "--timestep must be positive"),
            (["md", "si64.extxyz", "--rdf", "si64.extxyz"], "is the input"),
        ]
        for (args, message) in cases {
            let run = try dir.run(args)
            #expect(run.status == 2, "\(args): \(run.stderr)")
            #expect(run.stderr.contains(message), "\(args): \(run.stderr)")
            #expect(dir.files() == ["si64.extxyz"], "\(args): \(dir.files())")
        }
        let help = try dir.run(["md", "--help"])
        #expect(help.status == 0 && help.stdout.contains("--thermostat") && help.stdout.contains("ps/day"))
    }
}
