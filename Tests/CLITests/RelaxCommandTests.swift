import Foundation
import Testing
import Atoms
import Potentials
import Relax
import Tape

func settings(fmax: Double, steps: Int = 500) -> RelaxationSettings {
    var s = RelaxationSettings()
    s.fmax = fmax
    s.maxSteps = steps
    return s
}

@Suite("relaxft relax", .serialized)
struct RelaxCommandTests {
    @Test func binaryIsBuilt() {
        #expect(FileManager.default.isExecutableFile(atPath: relaxftBinary), "\(relaxftBinary)")
    }

    /// The written structure is exactly what Relax.relax gives; JSON, log and trajectory agree with it.
    @Test func relaxesAsTheLibraryDoes() throws {
        let dir = try Scratch(copying: ["Fixtures/structures/si_vacancy.extxyz"])
        defer { dir.remove() }
        let run = try dir.run(["relax", "si_vacancy.extxyz", "--potential", "sw", "--relaxer", "fire", "--fmax", "0.02",
                               "--trajectory", "traj.xyz", "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let input = try StructureIO.read(dir.path("si_vacancy.extxyz"))[0]
        let expected = relax(input, potential: StillingerWeber(), relaxer: FIRE(), settings: settings(fmax: 0.02))
        #expect(expected.converged)

        let out = try StructureIO.read(dir.path("si_vacancy-relaxed.extxyz"))
        try #require(out.count == 1)
        #expect(out[0].positions == expected.structure.positions)
        #expect(out[0].cell == input.cell)
        #expect(out[0].energy == expected.structure.energy)
        #expect(out[0].forces == expected.structure.forces)
        #expect(out[0].stress == nil, "no stress without --relax-cell")
        #expect(out[0].info["converged"] == .bool(true) && out[0].info["steps"] == .int(expected.steps))

        let reports = run.json
        try #require(reports.count == 1, "stdout: \(run.stdout)")
        let r = reports[0]
        #expect(r["frame"] as? Int == 0 && r["atoms"] as? Int == 63)
        #expect(r["converged"] as? Bool == true)
        #expect(r["steps"] as? Int == expected.steps)
        #expect(run.number("energy") == expected.structure.energy)
        #expect(run.number("initial_energy") == expected.initialEnergy)
        #expect(run.number("fmax") == expected.fmax)
        #expect(run.number("max_displacement") == expected.maxDisplacement)
        #expect(r["force_calls"] as? Int == expected.forceCalls)
        #expect((r["seconds"] as? Double).map { $0 >= 0 } == true)
        #expect(r["relaxer"] as? String == "fire" && r["potential"] as? String == "sw")
        #expect((r["relaxer_parameters"] as? [String: Double])?["dt"] == 0.1)

        // The log goes to stderr with --json: a header and one ASE-style line per step.
        let logLines = run.stderr.split(separator: "\n").filter { $0.hasPrefix("FIRE:") }
        #expect(logLines.count == expected.steps + 1)
        #expect(logLines.first.map { $0.hasPrefix("FIRE:    0 ") } == true, "\(logLines.first ?? "")")
        #expect(run.stderr.contains("frame 0: converged in \(expected.steps) steps"))

        let traj = try StructureIO.read(dir.path("traj.xyz"))
        #expect(traj.count == expected.steps + 1)
        #expect(traj.map { $0.info["step"]?.intValue } == (0...expected.steps).map { $0 })
        #expect(traj.last?.positions == expected.structure.positions)
        #expect(traj.first?.positions == input.positions)
        #expect(traj.last?.info["fmax"]?.doubleValue == expected.fmax)
        #expect(traj.last?.energy == expected.structure.energy && traj.last?.forces == expected.structure.forces)
        #expect(dir.files() == ["si_vacancy-relaxed.extxyz", "si_vacancy.extxyz", "traj.xyz"], "no temporary files left")
    }

    /// End to end against ASE (Fixtures/relax): BFGS with ASE's LJ, and FIRE on the cell at 1 GPa.
    @Test(arguments: [("lj_bfgs_2x2x2", "bfgs"), ("lj_cell_fire_p1", "fire")])
    func agreesWithASE(reference: String, relaxer: String) throws {
        let ref = try ASEReference(reference)
        let dir = try Scratch()
        defer { dir.remove() }
        try StructureIO.write([ref.start], dir.path("start.xyz"))
        var args = ["relax", "start.xyz", "--potential", ref.potentialSpec, "--relaxer", relaxer, "--fmax", "0.001",
                    "--steps", "2000", "-o", "final.xyz", "--trajectory", "traj.xyz", "--json", "--quiet"]
        if ref.pressureGPa != nil { args += ["--relax-cell", "--pressure", "\(ref.pressureGPa!)"] }
        let run = try dir.run(args)
        #expect(run.status == 0, "\(run.stderr)")
        #expect(!run.stderr.contains(":    0 "), "--quiet: no per-step log")
        let final = try StructureIO.read(dir.path("final.xyz"))[0]
        #expect(final.positions.maxAbsDifference(ref.final.positions) <= 1e-6)
        #expect(final.cell.maxAbsDifference(ref.final.cell) <= 1e-6)
        let traj = try StructureIO.read(dir.path("traj.xyz"))
        #expect(traj.count == ref.frameCount, "ASE took \(ref.frameCount - 1) steps")
        var early = 0.0
        for (k, (x, c)) in ref.early where k < traj.count {
            early = max(early, traj[k].positions.maxAbsDifference(x), traj[k].cell.maxAbsDifference(c))
            // The trajectory has the potential energy; the reference, what ASE's optimizer sees (E + pV on a cell filter).
            let enthalpy = traj[k].energy! + (ref.pressureGPa ?? 0) / 160.21766208 * traj[k].volume
            #expect(abs(enthalpy - ref.energies[k]) <= 1e-9 * abs(ref.energies[k]), "frame \(k)")
        }
        #expect(early <= 1e-8, "first 100 steps deviate from ASE by \(early) Å")
        let r = try #require(run.json.first)
        #expect(r["steps"] as? Int == ref.frameCount - 1)
        if ref.pressureGPa != nil {
            #expect(final.stress != nil, "cell relaxations write the stress")
            #expect(r["pressure"] as? Double == 1.0)
            let volume = try #require(r["volume"] as? Double), enthalpy = try #require(r["enthalpy"] as? Double)
            #expect(abs(volume - final.volume) <= 1e-9 * volume)
            #expect(abs(enthalpy - (final.energy! + final.volume / 160.21766208)) <= 1e-9 * abs(enthalpy))
        }
    }

    /// Every frame is relaxed (or those --frames picks); stale calculator results are dropped, fixed atoms stay.
    @Test func multiFrameInput() throws {
        let dir = try Scratch(copying: ["Fixtures/structures/cual_triclinic.extxyz"])
        defer { dir.remove() }
        let lj = "lj:sigma=2.3,epsilon=0.1,rc=5.5,ro=4.5,smooth=true"
        let run = try dir.run(["relax", "cual_triclinic.extxyz", "--potential", lj, "--relaxer", "bfgs", "--json", "-o", "out.xyz"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stderr.contains("warning:") && run.stderr.contains("Cu, Al"), "one sigma and epsilon for Cu and Al: \(run.stderr)")
        #expect(run.json.map { $0["frame"] as? Int } == [0, 1, 2])
        let input = try StructureIO.read(dir.path("cual_triclinic.extxyz"))
        let out = try StructureIO.read(dir.path("out.xyz"))
        try #require(out.count == 3)
        #expect(input[0].stress != nil && out[0].stress == nil, "the input's EMT stress is not carried over")
        #expect(out[0].info["free_energy"] == nil)
        for k in 0..<3 {
            let expected = relax(input[k], potential: try PotentialSpec.parse(lj), relaxer: BFGS(), settings: settings(fmax: 0.01))
            #expect(out[k].positions == expected.structure.positions, "frame \(k)")
        }
        let fixed = try #require(input[0].fixed)
        for a in 0..<fixed.count where fixed[a] {
            #expect(out[0].positions.slice(axis: 0, a..<(a + 1)) == input[0].positions.slice(axis: 0, a..<(a + 1)))
        }

        let some = try dir.run(["relax", "cual_triclinic.extxyz", "--potential", lj, "--frames", "1:", "--json", "-o", "some.xyz"])
        #expect(some.status == 0, "\(some.stderr)")
        #expect(some.json.map { $0["frame"] as? Int } == [1, 2])
        #expect(try StructureIO.read(dir.path("some.xyz")).count == 2)
    }

    /// Not converged within --steps: exit code 1, the structure is still written.
    @Test func notConvergedExitsWithOne() throws {
        let dir = try Scratch(copying: ["Fixtures/structures/si_vacancy.extxyz"])
        defer { dir.remove() }
        let run = try dir.run(["relax", "si_vacancy.extxyz", "--steps", "3", "--json"])
        #expect(run.status == 1)
        let r = try #require(run.json.first)
        #expect(r["converged"] as? Bool == false && r["steps"] as? Int == 3)
        #expect(run.stderr.contains("NOT converged in 3 steps"))
        let out = try StructureIO.read(dir.path("si_vacancy-relaxed.extxyz"))
        #expect(out[0].info["converged"] == .bool(false))
    }

    /// A model file as the potential; --steps 0 only evaluates.
    @Test func modelFilePotential() throws {
        let dir = try Scratch(copying: ["Fixtures/structures/si_vacancy.extxyz"])
        defer { dir.remove() }
        let model = try PotentialSpec.parse("sw:sigma=2.116,lambda=18.9")
        try ModelFile.save(model, to: dir.path("si.safetensors"))
        let run = try dir.run(["relax", "si_vacancy.extxyz", "--potential", "si.safetensors", "--steps", "0", "--json", "-o", "out.xyz"])
        #expect(run.status == 1, "one evaluation does not converge a rattled structure")
        let input = try StructureIO.read(dir.path("si_vacancy.extxyz"))[0]
        let expected = relax(input, potential: model, relaxer: FIRE(), settings: settings(fmax: 0.01, steps: 0))
        #expect(run.number("energy") == expected.structure.energy && run.number("initial_energy") == expected.structure.energy)
        #expect(run.json.first?["steps"] as? Int == 0 && run.json.first?["potential"] as? String == "si.safetensors")
        #expect(try StructureIO.read(dir.path("out.xyz"))[0].positions == input.positions)
    }

    /// A structure with an element a model file does not declare: exit 2 with the element named, nothing
    /// written (not a crash in the model's species lookup).
    @Test func unknownElementForAModelIsAUsageError() throws {
        let dir = try Scratch(copying: ["Fixtures/models/si-so3krates-pretrained.safetensors"])
        defer { dir.remove() }
        try "2\nLattice=\"6 0 0 0 6 0 0 0 6\" Properties=species:S:1:pos:R:3 pbc=\"T T T\"\nGe 0 0 0\nSi 1.4 1.4 1.4\n"
            .write(toFile: dir.path("sige.xyz"), atomically: true, encoding: .utf8)
        let run = try dir.run(["relax", "sige.xyz", "--potential", "si-so3krates-pretrained.safetensors"])
        #expect(run.status == 2)
        #expect(run.stderr.contains("contains Ge, which si-so3krates-pretrained.safetensors does not know"), "\(run.stderr)")
        #expect(!dir.files().contains("sige-relaxed.xyz"))
    }

    /// POSCAR in, POSCAR out next to it; without --json the log and summary go to stdout; fixed atoms stay.
    @Test func poscarInput() throws {
        let dir = try Scratch(copying: ["Fixtures/structures/si_vacancy_fixed.vasp"])
        defer { dir.remove() }
        let run = try dir.run(["relax", "si_vacancy_fixed.vasp", "--relaxer", "lbfgs", "--fmax", "0.05"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("LBFGS:    0 ") && run.stdout.contains("frame 0: converged"))
        #expect(run.stdout.contains("positions and cell only"))
        let input = try StructureIO.read(dir.path("si_vacancy_fixed.vasp"))[0]
        let out = try StructureIO.read(dir.path("si_vacancy_fixed-relaxed.vasp"))[0]
        let expected = relax(input, potential: StillingerWeber(), relaxer: LBFGS(), settings: settings(fmax: 0.05))
        #expect(out.positions == expected.structure.positions)
        #expect(out.fixed == input.fixed)
        let fixed = try #require(input.fixed)
        #expect(fixed.contains(true))
        for a in 0..<fixed.count where fixed[a] {
            #expect(out.positions.slice(axis: 0, a..<(a + 1)) == input.positions.slice(axis: 0, a..<(a + 1)))
        }
    }

    /// A command line run on a copy of `file` (its name is the first argument) and the message it must print.
    struct ErrorCase: Sendable, CustomTestStringConvertible {
        let file: String
        let args: [String]
        let message: String
        var testDescription: String { message }
        init(_ file: String, _ args: [String], _ message: String) { (self.file, self.args, self.message) = (file, args, message) }
    }

    static let (si, ethanol, cual) = ("Fixtures/structures/si_vacancy.extxyz", "Fixtures/structures/ethanol.extxyz", "Fixtures/structures/cual_triclinic.extxyz")
    static let errorCases: [ErrorCase] = [
        ErrorCase("Tests/AtomsTests/Malformed/wrong_column_count.xyz", [],
                  "wrong_column_count.xyz:4: wrong column count: expected 4 columns (Properties=species:S:1:pos:R:3), found 3"),
        ErrorCase("Tests/AtomsTests/Malformed/truncated_second_frame.xyz", [], "truncated_second_frame.xyz:4: truncated frame"),
        ErrorCase("missing.xyz", [], "missing.xyz: cannot read file: expected a readable file, found no such file"),
        ErrorCase(si, ["--relaxer", "gd"], "--relaxer: unknown relaxer 'gd' (known: fire, fire-jaxmd, bfgs, lbfgs, frame)"),
        ErrorCase(si, ["--relaxer-param", "dt=0.05,beta=2"],
                  "--relaxer-param: relaxer fire has no hyperparameter 'beta' (has: dt, maxstep, dtmax, finc, fdec, astart, fa)"),
        ErrorCase(si, ["--relaxer", "bfgs", "--relaxer-param", "alpha"], "--relaxer-param expects name=value, got 'alpha'"),
        ErrorCase(si, ["--relaxer-param", "dt=fast"], "--relaxer-param dt: expects a number, got 'fast'"),
        ErrorCase(si, ["--potential", "tersoff"], "--potential: unknown potential 'tersoff'"),
        ErrorCase(si, ["--potential", "sw:beta=1"], "--potential: sw has no parameter 'beta'"),
        ErrorCase(ethanol, ["--potential", "lj", "--relax-cell"],
                  "--relax-cell needs a structure periodic along all three axes; ethanol.extxyz has pbc F F F"),
        ErrorCase(ethanol, ["--potential", "sw"], "Stillinger-Weber here has one set of parameters (silicon's) for every atom; ethanol.extxyz has C, O, H"),
        // Without --potential only silicon defaults to sw; anything else must name its potential.
        ErrorCase(ethanol, [], "--potential MODEL is required: ethanol.extxyz contains H, C, O"),
        ErrorCase(si, ["-o", "./si_vacancy.extxyz"], "would overwrite the input"),
        ErrorCase(cual, ["--potential", "lj", "-o", "POSCAR"], "a POSCAR holds one structure and 3 frames are selected"),
        ErrorCase(ethanol, ["--potential", "lj", "-o", "ethanol.vasp"], "a POSCAR needs a cell and ethanol.extxyz has none"),
        ErrorCase(si, ["--pressure", "1"], "--pressure applies to cell relaxations: add --relax-cell"),
        ErrorCase(si, ["--fmax", "-1"], "--fmax must be positive"),
        ErrorCase(si, ["--trajectory", "t.vasp"], "trajectories are extended XYZ"),
    ]

    /// Bad input: exit code 2, a message naming the file and line or the option, nothing written.
    @Test(arguments: errorCases)
    func reportsErrors(_ c: ErrorCase) throws {
        let inRepo = FileManager.default.fileExists(atPath: repoRoot.appendingPathComponent(c.file).path)
        let dir = try Scratch(copying: inRepo ? [c.file] : [])
        defer { dir.remove() }
        let before = dir.files()
        let trajectory = c.args.contains("--trajectory") ? [] : ["--trajectory", "traj.xyz"]
        let run = try dir.run(["relax", URL(fileURLWithPath: c.file).lastPathComponent] + c.args + trajectory)
        #expect(run.status == 2)
        #expect(run.stderr.contains(c.message), "stderr: \(run.stderr)")
        #expect(run.stdout.isEmpty)
        #expect(dir.files() == before, "nothing written")
    }

    @Test func helpStatesUnitsAndFormats() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let run = try dir.run(["relax", "--help"])
        #expect(run.status == 0)
        for s in ["(eV/Å)", "GPa", "A POSCAR holds positions", "Exit codes: 0 when every frame converged; 1"] {
            #expect(run.stdout.contains(s), "\(s)")
        }
    }
}

/// An ASE trajectory of Fixtures/relax (see its README): start, final structure and frames 0…100.
struct ASEReference {
    let start: Structure
    let final: Structure
    let early: [Int: (Tensor, Tensor)]
    let energies: [Double]
    let frameCount: Int
    let potentialSpec: String
    let pressureGPa: Double?

    init(_ name: String) throws {
        let dir = repoRoot.appendingPathComponent("Fixtures/relax")
        let meta = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("\(name).json"))) as! [String: Any]
        let numbers = meta["numbers"] as! [Int], n = numbers.count
        let cell = Tensor(shape: [3, 3], (meta["cell"] as! [[Double]]).flatMap { $0 })
        let x0 = Tensor(shape: [n, 3], (meta["initial_positions"] as! [[Double]]).flatMap { $0 })
        start = Structure(numbers: numbers, positions: x0, cell: cell, pbc: meta["pbc"] as! [Bool])
        let raw = try Data(contentsOf: dir.appendingPathComponent("\(name).f64"))
        let values: [Double] = raw.withUnsafeBytes { p in
            (0..<(raw.count / 8)).map { Double(bitPattern: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self))) }
        }
        let withCell = meta["with_cell"] as! Bool
        let per = 3 * n + (withCell ? 9 : 0)
        var frames: [Int: (Tensor, Tensor)] = [:]
        for (k, index) in (meta["stored_frames"] as! [Int]).enumerated() {
            let block = Array(values[(k * per)..<((k + 1) * per)])
            frames[index] = (Tensor(shape: [n, 3], Array(block[0..<(3 * n)])), withCell ? Tensor(shape: [3, 3], Array(block[(3 * n)...])) : cell)
        }
        frameCount = meta["frames"] as! Int
        var last = start
        (last.positions, last.cell) = frames[frameCount - 1]!
        final = last
        early = frames.filter { $0.key <= 100 }
        energies = meta["energy"] as! [Double]
        pressureGPa = (meta["relax_cell"] as? Bool) == true ? meta["pressure_gpa"] as? Double : nil
        switch meta["potential"] as! String {
        case "lj": potentialSpec = "lj:sigma=2.0951,epsilon=1,rc=3.2,ro=2.8,smooth=true"
        case "lj_fcc": potentialSpec = "lj:sigma=2.3,epsilon=0.1,rc=5.5,ro=4.5,smooth=true"
        default: potentialSpec = "sw"
        }
    }
}
