import Atoms
import FineTune
import Foundation
import Potentials
import Relax
import Tape
#if canImport(Glibc)
import Glibc
#endif

/// ASE's unit: 1 GPa in eV/Å³ (CODATA 2014, ASE's default).
let gigapascal = 1 / 160.21766208

let relaxCommand = Command(
    spec: CommandSpec(
        name: "relax", summary: "relax structures (positions, optionally the cell) with a classical potential or a model file",
        usage: "STRUCTURE [--potential MODEL] [--relaxer NAME] [--relaxer-param name=value,…] [--fmax F] [--steps N] "
            + "[--relax-cell [--pressure P]] [-o OUT] [--trajectory TRAJ] [--frames SLICE] [--to FMT] [--json] [--quiet]",
        options: [
            Vocabulary.potential.detail("see below").describedDefault("sw for structures of silicon only", reason: "any other structure needs the option"),
            Vocabulary.relaxer.detail("see below"),
            Vocabulary.relaxerParam,
            Vocabulary.fmax,
            Vocabulary.steps.detail("at most N relaxer steps per frame (0: evaluate only)"),
            OptionSpec("--relax-cell", help: "relax the cell too, as ASE's FrechetCellFilter (needs pbc T T T)"),
            OptionSpec("--pressure", value: "P", help: "external pressure for --relax-cell, GPa, positive compresses (default: 0)"),
            Vocabulary.out.detail("the relaxed frames (default: STRUCTURE's name with -relaxed, next to it; see below)"),
            OptionSpec("--trajectory", value: "TRAJ", help: "write every logged step of every frame to TRAJ (extended XYZ)"),
            Vocabulary.frames.detail("frames of STRUCTURE to relax"),
            Vocabulary.to.detail("OUT's format (default: from OUT's name, else STRUCTURE's format)"),
            Vocabulary.from,
            Vocabulary.json.detail("one object per frame"),
            Vocabulary.quiet.detail("no per-step log"),
        ],
        details: """
            Relaxes every frame of STRUCTURE (or those --frames selects) until the force on every atom is below
            --fmax or --steps steps were taken. Per step it prints ASE's log line (optimizer, step, time, energy in
            eV, fmax in eV/Å), per frame a summary: converged or not, steps, energy change, largest displacement of
            an atom (minimum image), force calls, time. With --relax-cell the log's energy is the enthalpy E + pV
            and fmax includes the cell's generalised forces, as in ASE. Log and summaries go to stdout, or to
            stderr with --json.

            Output: OUT (default: si.xyz -> si-relaxed.xyz, POSCAR -> POSCAR-relaxed, CIF input -> .extxyz; an
            existing file of that name is replaced, the input never: naming it is an error) holds the relaxed frames
            with energy (eV), forces (eV/Å), for --relax-cell the stress (eV/Å³, ASE's sign), and the info keys
            converged, steps and fmax; calculator results the input carried are dropped. A POSCAR holds positions
            and cell only (and one frame): use --json or an .xyz OUT to keep energies and forces. TRAJ has every
            logged step as an extended XYZ frame: positions, cell, forces, energy (eV, without pV) and the info
            keys frame (index in STRUCTURE), step and fmax.

            Potentials: sw is Stillinger-Weber silicon (1985; epsilon 2.16826 eV, sigma 2.0951 Å; also A, B,
            lambda, gamma, a, p, q, cos_theta0, cos_epsilon), lj is ASE's LennardJones (sigma 1 Å, epsilon 1 eV,
            rc 3 sigma, shifted; rc, ro in Å, smooth=true for ASE's smooth cutoff), e.g.
            lj:sigma=2.3,epsilon=0.1,rc=5.5,ro=4.5,smooth=true. Both treat every atom alike, whatever its element:
            sw refuses structures with more than one element and warns for one other than Si; lj warns for more
            than one element. Without --potential, structures of silicon only are relaxed with sw (and the log
            says so); anything else needs --potential.

            Relaxers and their --relaxer-param names (defaults as in the references): fire, ASE's FIRE: dt,
            maxstep, dtmax, finc, fdec, astart, fa; fire-jaxmd, JAX-MD's fire_descent: dt_start, dt_max, f_inc,
            f_dec, alpha_start, f_alpha; bfgs, ASE's BFGS: maxstep, alpha; lbfgs, ASE's LBFGS: maxstep, damping,
            alpha; frame, force following x += eta·F: eta, maxstep (≤ 0: no clamp). maxstep in Å, dt in ASE's
            time unit (Å·√(u/eV), about 10.18 fs), alpha in eV/Å², eta in Å²/eV.

            --json prints per frame, once OUT is written: frame, atoms, converged, steps, energy and
            initial_energy (eV), fmax (eV/Å), max_displacement (Å), force_calls, seconds, relaxer,
            relaxer_parameters, potential; with --relax-cell also enthalpy and initial_enthalpy (eV), pressure
            (GPa), volume and initial_volume (Å³).

            Exit codes: 0 when every frame converged; 1 when some frame did not converge within --steps (its
            structure is written all the same); 2 for bad options or input, with a message naming the option or
            the file and line, and nothing written (OUT and TRAJ go to temporary files renamed into place at the
            end).
            """),
    run: runRelax)

/// Where the log and summaries go: stdout, or stderr with --json so that stdout carries only JSON.
struct Terminal {
    let handle: FileHandle
    func line(_ s: String) { handle.write(Data((s + "\n").utf8)) }
}

/// The options of `relax`, checked before any work.
struct RelaxJob {
    var input: String
    var inFormat: StructureFormat
    var output: String
    var outFormat: StructureFormat
    var trajectoryPath: String?
    var selection: FrameSelection
    var framesText: String
    var settings: RelaxationSettings
    var pressureGPa: Double
    /// --potential and its potential (nil: not given).
    var potential: (spec: String, potential: any Potential)?
    var relaxer: any Relaxer

    init(_ args: ParsedArguments) throws {
        func usage(_ message: String) -> UsageError { UsageError(command: "relax", message: message) }
        guard args.positionals.count == 1 else {
            throw usage("expects one STRUCTURE file, got \(args.positionals.count) argument(s)")
        }
        input = args.positionals[0]
        func format(_ option: String) throws -> StructureFormat? {
            guard let name = args.string(option) else { return nil }
            guard let f = StructureFormat(name: name) else { throw usage("--\(option) expects extxyz, vasp or cif, got '\(name)'") }
            return f
        }
        let inFormatOption = try format("from"), outFormatOption = try format("to")
        if outFormatOption == .cif { throw usage("--to cif: CIF is read only (write extxyz or vasp)") }
        settings = RelaxationSettings()
        settings.fmax = try args.positiveDouble("fmax") ?? 0.01
        let steps = try args.int("steps") ?? 500
        guard steps >= 0 else { throw usage("--steps must be 0 or more, got \(steps)") }
        settings.maxSteps = steps
        settings.relaxCell = args.has("relax-cell")
        pressureGPa = try args.double("pressure") ?? 0
        if args.has("pressure") && !settings.relaxCell { throw usage("--pressure applies to cell relaxations: add --relax-cell") }
        settings.pressure = pressureGPa * gigapascal
        selection = try frameSelection(args)
        framesText = args.string("frames") ?? ""
        potential = try args.string("potential").map { ($0, try parsePotential($0, command: "relax")) }
        relaxer = try parseRelaxer(args, command: "relax")

        // Where the results go: checked before relaxing, so that a long run does not end in an unwritable path.
        guard let inFormat = inFormatOption ?? StructureFormat(path: input) else {
            throw usage("cannot tell the format of '\(input)' from its name; use --from extxyz, vasp or cif")
        }
        self.inFormat = inFormat
        if let o = args.string("out") {
            guard let f = outFormatOption ?? StructureFormat(path: o) else {
                throw usage("cannot tell the format of '\(o)' from its name; use --to extxyz or --to vasp")
            }
            if f == .cif { throw usage("-o \(o): CIF is read only (write extxyz or vasp)") }
            (output, outFormat) = (o, f)
        } else {
            outFormat = outFormatOption ?? (inFormat == .cif ? .extxyz : inFormat)
            output = defaultOutputPath(input: input, inputFormat: inFormat, outputFormat: outFormat)
        }
        if sameFile(output, input) { throw usage("the output \(output) would overwrite the input; name another with -o") }
        try requireWritableDirectory(output, option: "-o", command: "relax")
        trajectoryPath = args.string("trajectory")
        if let t = trajectoryPath {
            if let f = StructureFormat(path: t), f != .extxyz {
                throw usage("--trajectory \(t): trajectories are extended XYZ; name the file .xyz or .extxyz")
            }
            if sameFile(t, input) || sameFile(t, output) {
                throw usage("--trajectory \(t) is also the \(sameFile(t, input) ? "input" : "output"); name another file")
            }
            try requireWritableDirectory(t, option: "--trajectory", command: "relax")
        }
    }

    /// The selected frames (index in the file, structure), checked against the output format and the options.
    func frames(_ structures: [Structure]) throws -> [(index: Int, structure: Structure)] {
        func usage(_ message: String) -> UsageError { UsageError(command: "relax", message: message) }
        guard let picked = selection.indices(count: structures.count), !picked.isEmpty else {
            throw usage("--frames \(framesText) selects no frame of \(input) (\(structures.count) frame(s))")
        }
        if outFormat == .vasp && picked.count > 1 {
            throw usage("a POSCAR holds one structure and \(picked.count) frames are selected; pick one with --frames or write extended XYZ (-o NAME.xyz)")
        }
        for k in picked {
            let s = structures[k]
            let which = structures.count > 1 ? "frame \(k) of \(input)" : input
            guard s.count > 0 else { throw usage("\(which) has no atoms") }
            if outFormat == .vasp && !s.hasCell { throw usage("a POSCAR needs a cell and \(which) has none; write extended XYZ (-o NAME.xyz)") }
            if settings.relaxCell && s.pbc != [true, true, true] {
                throw usage("--relax-cell needs a structure periodic along all three axes; \(which) has pbc \(s.pbc.map { $0 ? "T" : "F" }.joined(separator: " "))")
            }
        }
        return picked.map { ($0, structures[$0]) }
    }
}

/// --potential MODEL as a potential; a bad spec or model file is a usage error naming the option.
func parsePotential(_ spec: String, command: String) throws -> any Potential {
    do { return try PotentialSpec.parse(spec) } catch let e as PotentialSpecError {
        throw UsageError(command: command, message: "--potential: \(e.message)")
    } catch {
        throw UsageError(command: command, message: "--potential \(spec): \(error)")  // an unreadable model file
    }
}

/// The potential of `relax` and `md` when --potential is not given: sw for structures of silicon only (said on
/// standard error), else a usage error, since silicon's potential applied to any element would give
/// plausible-looking nonsense.
func siliconDefault(structures: [Structure], name: String, command: String) throws -> (spec: String, potential: any Potential) {
    let elements = Set(structures.flatMap(\.numbers))
    guard elements == [14] else {
        let symbols = elements.sorted().map { Elements.symbols[$0] }.joined(separator: ", ")
        throw UsageError(command: command, message: "--potential MODEL is required: \(name) contains \(symbols) (only structures of silicon alone "
                         + "default to Stillinger-Weber silicon, sw; relaxft models list shows the models at hand)")
    }
    printError("relaxft \(command): no --potential given: using sw (Stillinger-Weber silicon, 1985) for \(name), which holds silicon only")
    return ("sw", try parsePotential("sw", command: command))
}

func runRelax(_ args: ParsedArguments) throws -> Int32 {
    let job = try RelaxJob(args)
    let structures = try StructureIO.read(job.input, format: job.inFormat)
    let frames = try job.frames(structures)
    let (potentialSpec, potential) = try job.potential ?? siliconDefault(structures: frames.map(\.structure), name: job.input, command: "relax")
    var warnings: [String] = []
    for (k, s) in frames {
        let which = structures.count > 1 ? "frame \(k) of \(job.input)" : job.input
        if let w = try speciesCheck(potential, spec: potentialSpec, structure: s, name: which, command: "relax"), !warnings.contains(w) { warnings.append(w) }
    }
    for w in warnings { printError("relaxft relax: warning: \(w)") }

    let json = args.has("json")
    let terminal = Terminal(handle: json ? FileHandle.standardError : FileHandle.standardOutput)
    let logSteps = !args.has("quiet")
    let trajectory = try job.trajectoryPath.map { try AtomicFileWriter(path: $0) }
    if logSteps {
        terminal.line("relaxft relax: \(job.input), \(frames.count) frame(s); potential \(potentialSpec); relaxer \(job.relaxer.summary); "
                      + "fmax \(job.settings.fmax) eV/Å, at most \(job.settings.maxSteps) steps" + (job.settings.relaxCell ? "; cell relaxed at \(job.pressureGPa) GPa" : ""))
    }
    var relaxed: [Structure] = [], reports: [String] = [], trajectoryFrames = 0
    for (k, s) in frames {
        let frame = try relaxFrame(s, index: k, job: job, potential: potential, potentialSpec: potentialSpec, terminal: terminal,
                                   logSteps: logSteps, announce: frames.count > 1, trajectory: trajectory)
        trajectoryFrames += frame.trajectoryFrames
        relaxed.append(frame.structure)
        reports.append(frame.json)
    }

    // The structures first (their writer checks them), then the trajectory, whose text is already on disk:
    // only a failed rename could leave one without the other, and neither is ever half-written.
    try StructureIO.write(relaxed, job.output, format: job.outFormat)
    try trajectory?.commit()
    let converged = relaxed.filter { $0.info["converged"] == .bool(true) }.count
    let kept = job.outFormat == .vasp ? "vasp: positions and cell only" : job.settings.relaxCell ? "extxyz, with energy, forces and stress" : "extxyz, with energy and forces"
    var done = "relaxft relax: \(converged) of \(relaxed.count) frame(s) converged; wrote \(job.output) (\(kept))"
    if let t = job.trajectoryPath { done += "; trajectory \(t) (\(trajectoryFrames) frames)" }
    if converged < relaxed.count { done += "; exit code 1: not every frame converged within \(job.settings.maxSteps) steps" }
    terminal.line(done)
    if json { for r in reports { print(r) } }
    return converged == relaxed.count ? 0 : 1
}

/// Relaxes frame `k`: the step log, the trajectory frames, the summary line; returns the relaxed structure
/// (with converged, steps and fmax in its info) and the frame's JSON object.
func relaxFrame(_ input: Structure, index k: Int, job: RelaxJob, potential: any Potential, potentialSpec: String, terminal: Terminal,
                logSteps: Bool, announce: Bool, trajectory: AtomicFileWriter?) throws -> (structure: Structure, json: String, trajectoryFrames: Int) {
    var s = input
    s.removeCalculatorResults()  // they belong to the input geometry, not to the steps or the result
    let settings = job.settings
    let logName = job.relaxer.name.uppercased()
    if logSteps {
        if announce { terminal.line("frame \(k): \(s.count) atoms, \(formula(s))") }
        let pad = String(repeating: " ", count: logName.count)
        terminal.line(pad + "  " + leftPadded("Step", 4) + " " + leftPadded("Time", 8) + " " + leftPadded("Energy", 15) + " " + leftPadded("fmax", 15))
    }
    var trajectoryError: Error?
    var trajectoryFrames = 0
    let result = relax(s, potential: potential, relaxer: job.relaxer, settings: settings) { step in
        if logSteps {
            terminal.line(logName + ":  " + cFormat("%3ld ", step.step) + clockTime() + cFormat(" %15.6f %15.6f", step.energy, step.fmax))
        }
        guard let trajectory, trajectoryError == nil else { return }
        var frame = s
        frame.positions = step.positions
        frame.cell = step.cell
        frame.energy = step.energy - settings.pressure * Swift.abs(step.cell.determinant3x3)
        frame.forces = step.forces
        frame.info["frame"] = .int(k)
        frame.info["step"] = .int(step.step)
        frame.info["fmax"] = .double(step.fmax)
        do {
            try trajectory.append(try StructureIO.text([frame], format: .extxyz, path: trajectory.path))
            trajectoryFrames += 1
        } catch { trajectoryError = error }
    }
    if let e = trajectoryError { throw e }
    guard result.finalEnergy.isFinite, result.fmax.isFinite else {
        throw RelaxError(message: "frame \(k) of \(job.input): the potential gave a non-finite energy or force (atoms too close?); nothing written")
    }
    var out = result.structure
    out.info["converged"] = .bool(result.converged)
    out.info["steps"] = .int(result.steps)
    out.info["fmax"] = .double(result.fmax)
    let initialVolume = input.volume, volume = result.structure.volume
    let e0 = result.initialEnergy - settings.pressure * initialVolume, e1 = result.structure.energy ?? .nan
    terminal.line(summary(frame: k, result: result, fmaxTarget: settings.fmax, initialEnergy: e0,
                          volumes: settings.relaxCell ? (initialVolume, volume) : nil,
                          enthalpies: settings.relaxCell && settings.pressure != 0 ? (result.initialEnergy, result.finalEnergy) : nil))
    var fields: [(String, String)] = [
        ("frame", "\(k)"), ("atoms", "\(s.count)"), ("converged", "\(result.converged)"), ("steps", "\(result.steps)"),
        ("energy", jsonNumber(e1)), ("initial_energy", jsonNumber(e0)), ("fmax", jsonNumber(result.fmax)),
        ("max_displacement", jsonNumber(result.maxDisplacement)), ("force_calls", "\(result.forceCalls)"),
        ("seconds", jsonNumber(result.seconds)), ("relaxer", jsonString(job.relaxer.name)),
        ("relaxer_parameters", "{" + job.relaxer.hyperparameters.named.map { "\(jsonString($0.name)): \(jsonNumber($0.value))" }.joined(separator: ", ") + "}"),
        ("potential", jsonString(potentialSpec)),
    ]
    if settings.relaxCell {
        fields += [("enthalpy", jsonNumber(result.finalEnergy)), ("initial_enthalpy", jsonNumber(result.initialEnergy)),
                   ("pressure", jsonNumber(job.pressureGPa)), ("volume", jsonNumber(volume)), ("initial_volume", jsonNumber(initialVolume))]
    }
    return (out, jsonObject(fields), trajectoryFrames)
}

/// `{"k": v, …}` from keys and already-encoded JSON values, in the given order.
func jsonObject(_ fields: [(String, String)]) -> String {
    "{" + fields.map { "\(jsonString($0.0)): \($0.1)" }.joined(separator: ", ") + "}"
}

/// --frames as a selection (all frames when absent).
func frameSelection(_ args: ParsedArguments) throws -> FrameSelection {
    guard let text = args.string("frames") else { return .all }
    guard let s = FrameSelection(text) else {
        throw UsageError(command: args.command, message: "--frames expects an index or a slice such as 3, -1 or 0:10:2, got '\(text)'")
    }
    return s
}

/// A failure during the run (not a usage error): printed as `relaxft relax: message`, exit code 2.
struct RelaxError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// sw and lj have no per-element parameters: every atom is treated alike. Returns a warning to print, or
/// throws when the structure cannot be meant for the potential (sw with several elements, or an element a model
/// file does not declare).
func speciesCheck(_ potential: any Potential, spec: String, structure s: Structure, name: String, command: String) throws -> String? {
    let unknown = unknownElements(s.numbers, known: declaredElements(potential))
    if !unknown.isEmpty, let known = declaredElements(potential) {
        let names = { (zs: [Int]) in zs.map { Elements.symbols[$0] }.joined(separator: ", ") }
        throw UsageError(command: command, message: "\(name) contains \(names(unknown)), which \(spec) does not know (its elements: \(names(known.sorted())))")
    }
    var elements: [Int] = []
    for z in s.numbers where !elements.contains(z) { elements.append(z) }
    let symbols = elements.map { Elements.symbols[$0] }.joined(separator: ", ")
    switch potential.kind {
    case "sw":
        if elements.count > 1 {
            throw UsageError(command: command, message: "--potential \(spec): Stillinger-Weber here has one set of parameters (silicon's) for "
                             + "every atom; \(name) has \(symbols)")
        }
        if elements != [14] {
            return "--potential \(spec) has silicon's parameters unless overridden (sw:epsilon=…,sigma=…); treating \(symbols) with them"
        }
    case "lj" where elements.count > 1:
        return "--potential \(spec) uses one sigma and epsilon for every pair of atoms (as ASE's LennardJones); \(name) has \(symbols)"
    default:
        break
    }
    return nil
}

/// `<stem>-relaxed.<ext>` next to the input: the input's extension when the format is kept, else .extxyz / .vasp.
func defaultOutputPath(input: String, inputFormat: StructureFormat, outputFormat: StructureFormat) -> String {
    let slash = input.lastIndex(of: "/").map { input.index(after: $0) } ?? input.startIndex
    let directory = input[..<slash], name = input[slash...]
    var stem = name[...], ext = ""
    if let dot = name.lastIndex(of: "."), dot != name.startIndex {
        stem = name[..<dot]
        ext = String(name[name.index(after: dot)...])
    }
    if outputFormat != inputFormat { ext = outputFormat == .extxyz ? "extxyz" : "vasp" }
    return directory + stem + "-relaxed" + (ext.isEmpty ? "" : "." + ext)
}

/// Whether two paths name the same file (same inode when both exist, else the same resolved path).
func sameFile(_ a: String, _ b: String) -> Bool {
    var sa = stat(), sb = stat()
    if stat(a, &sa) == 0 && stat(b, &sb) == 0 { return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino }
    func resolved(_ p: String) -> String { URL(fileURLWithPath: p).standardizedFileURL.resolvingSymlinksInPath().path }
    return resolved(a) == resolved(b)
}

func requireWritableDirectory(_ path: String, option: String, command: String) throws {
    let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
        throw UsageError(command: command, message: "\(option) \(path): no directory \(directory)")
    }
    guard FileManager.default.isWritableFile(atPath: directory) else {
        throw UsageError(command: command, message: "\(option) \(path): directory \(directory) is not writable")
    }
}

/// One summary line per frame.
func summary(frame k: Int, result r: RelaxationResult, fmaxTarget: Double, initialEnergy e0: Double,
             volumes: (Double, Double)?, enthalpies: (Double, Double)?) -> String {
    let e1 = r.structure.energy ?? .nan
    var s = "frame \(k): " + (r.converged ? "converged in \(r.steps) steps (fmax \(cFormat("%.4g", r.fmax)) < \(fmaxTarget) eV/Å)"
                                         : "NOT converged in \(r.steps) steps (fmax \(cFormat("%.4g", r.fmax)) ≥ \(fmaxTarget) eV/Å)")
    s += cFormat("; energy %.6f -> %.6f eV (change %+.6f eV)", e0, e1, e1 - e0)
    if let (h0, h1) = enthalpies { s += cFormat("; enthalpy %.6f -> %.6f eV", h0, h1) }
    if let (v0, v1) = volumes { s += cFormat("; volume %.4f -> %.4f Å³", v0, v1) }
    s += cFormat("; max displacement %.4f Å; %ld force calls; %.3f s", r.maxDisplacement, r.forceCalls, r.seconds)
    return s
}

/// Chemical formula in order of first appearance (Si63, Cu6Al2).
func formula(_ s: Structure) -> String {
    var order: [Int] = [], counts: [Int: Int] = [:]
    for z in s.numbers {
        if counts[z] == nil { order.append(z) }
        counts[z, default: 0] += 1
    }
    return order.map { Elements.symbols[$0] + (counts[$0] == 1 ? "" : "\(counts[$0]!)") }.joined()
}

/// printf-style formatting (String(format:) with the C locale).
func cFormat(_ format: String, _ args: any CVarArg...) -> String {
    String(format: format, arguments: args)
}

func leftPadded(_ s: String, _ width: Int) -> String {
    String(repeating: " ", count: max(0, width - s.count)) + s
}

/// Local time as HH:MM:SS, as ASE's log prints it.
func clockTime() -> String {
    var now = time(nil)
    var t = tm()
    localtime_r(&now, &t)
    return cFormat("%02d:%02d:%02d", t.tm_hour, t.tm_min, t.tm_sec)
}

/// A JSON number in shortest round-trip form (null for NaN and infinities, which JSON lacks).
func jsonNumber(_ x: Double) -> String { x.isFinite ? "\(x)" : "null" }

func jsonString(_ s: String) -> String { JSONText.string(s) }
