import Atoms
import Dynamics
import Foundation
import Potentials
import Tape

let mdCommand = Command(
    spec: CommandSpec(
        name: "md", summary: "molecular dynamics of one structure: NVE, Langevin or Nosé–Hoover, many replicas batched",
        usage: "STRUCTURE [--potential MODEL] [--temperature K] [--timestep FS] [--steps N] [--replicas R] "
            + "[--thermostat langevin|nose-hoover|none] [--seed N] [-o TRAJ.xyz] [--interval K] [--equilibrate N] [--rdf RDF.csv] [--json] [--quiet]",
        options: [
            Vocabulary.potential.describedDefault("sw for structures of silicon only", reason: "any other structure needs the option"),
            Vocabulary.temperature.detail("and the initial temperature unless --initial-temperature is given"),
            OptionSpec("--initial-temperature", value: "K", help: "temperature of the Maxwell–Boltzmann initial velocities (default: --temperature)"),
            Vocabulary.timestep,
            Vocabulary.steps.detail("MD steps per replica").withDefault("1000", reason: "MD steps, 1 ps at the default time step, not relaxer steps"),
            Vocabulary.replicas.detail("each with its own velocities and noise"),
            Vocabulary.thermostat,
            Vocabulary.friction,
            Vocabulary.tdamp,
            Vocabulary.chain,
            Vocabulary.seed.detail("of the initial velocities and the Langevin noise (replica r: seed and r)"),
            Vocabulary.frames.detail("must select one frame of STRUCTURE, the one to start from").withDefault("0", reason: "one structure starts the replicas").alias("--frame"),
            Vocabulary.out.detail("the trajectory, extended XYZ: every --interval steps one frame per running replica"),
            OptionSpec("--interval", value: "K", default: "100", help: "steps between trajectory frames"),
            Vocabulary.equilibrate.detail("left out of the trajectory, the RDF and the summary"),
            OptionSpec("--rdf", value: "CSV", help: "mean radial distribution function of the frames taken every --interval steps (after --equilibrate), columns r,g: a reference for 'relaxft stable'"),
            Vocabulary.rdfRmax,
            Vocabulary.rdfBins,
            Vocabulary.rdfSigma.detail("use the same in 'relaxft stable'"),
            OptionSpec("--log-interval", value: "K", help: "steps between log lines (default: about 20 lines per run)"),
            Vocabulary.bondThreshold.detail("StABlE's evaluation threshold"),
            Vocabulary.bondCutoff,
            Vocabulary.minDistance,
            OptionSpec("--stop-unstable", help: "stop a replica when it becomes unstable (it is always stopped on non-finite energies or forces)"),
            OptionSpec("--skin", value: "Å", default: "0.5", help: "Verlet skin of the neighbour lists"),
            Vocabulary.json.detail("a summary at the end"),
            Vocabulary.quiet.detail("the summary is still printed"),
        ],
        details: """
            Units as in ASE: eV, Å, u, time steps in fs. Initial velocities are drawn from Maxwell–Boltzmann with the
            total momentum removed. The temperature is 2·E_kin/(N_f·k_B) with N_f = 3N − 3 (NVE, Nosé–Hoover: total
            momentum is conserved) or 3N (Langevin). Positions are wrapped into the cell along periodic axes.

            Log lines (stdout, or stderr with --json): step, time (ps), mean temperature (K), potential and total (or,
            for Nosé–Hoover, conserved) energy per atom (eV), largest bond deviation so far (Å), replicas still
            running, and the speed in ps/day (per replica; R replicas make R times that in total). Each replica is
            checked every 10 steps against the bonds of the starting structure: the summary gives the time of its
            first instability (max bond deviation over --bond-threshold, or a distance under --min-distance).

            TRAJ frames carry positions, momenta (u·Å per ASE time unit, as ASE stores them), forces, energy and
            the info keys replica, step, time_fs, temperature and total_energy; ase.io.read gives velocities with
            atoms.get_velocities().

            Exit codes: 0 when every replica finished its steps; 1 when a replica stopped early (non-finite energy
            or forces, or unstable with --stop-unstable; the trajectory is written all the same); 2 for bad options
            or input.
            """),
    run: runMD)

/// The options of `md`, checked before any work.
struct MDJob {
    var input: String
    var temperature: Double
    var initialTemperature: Double
    var dt: Double
    var steps: Int
    var replicas: Int
    var thermostat: Thermostat
    var seed: UInt64
    var interval: Int
    var logInterval: Int
    var threshold: Double
    var bondCutoff: Double?
    var minDistance: Double?
    var skin: Double
    var frames: FrameSelection
    var framesText: String
    var potential: (spec: String, potential: any Potential)?
    var equilibrate: Int
    var rdfPath: String?
    var rdfSettings: RDFSettings
    var trajectoryPath: String?

    init(_ args: ParsedArguments) throws {
        func usage(_ m: String) -> UsageError { UsageError(command: "md", message: m) }
        guard args.positionals.count == 1 else { throw usage("expects one STRUCTURE file, got \(args.positionals.count) argument(s)") }
        input = args.positionals[0]
        temperature = try args.positiveDouble("temperature")!
        initialTemperature = try args.double("initial-temperature") ?? temperature
        guard initialTemperature >= 0 else { throw usage("--initial-temperature must be ≥ 0") }
        dt = try args.positiveDouble("timestep")!
        guard let n = try args.int("steps"), n >= 0 else { throw usage("--steps must be 0 or more") }
        steps = n
        replicas = try args.positiveInt("replicas")!
        thermostat = try parseThermostat(args, command: "md", timestep: dt)
        seed = try seedOption(args)
        interval = try args.positiveInt("interval")!
        logInterval = try args.positiveInt("log-interval") ?? max(1, steps / 20)
        threshold = try args.positiveDouble("bond-threshold")!
        bondCutoff = try args.positiveDouble("bond-cutoff")
        minDistance = try args.positiveDouble("min-distance")
        skin = try args.double("skin")!
        guard skin >= 0 else { throw usage("--skin must be ≥ 0") }
        frames = try frameSelection(args)
        framesText = args.string("frames")!
        potential = try args.string("potential").map { ($0, try parsePotential($0, command: "md")) }
        equilibrate = try args.int("equilibrate") ?? 0
        guard equilibrate >= 0 else { throw usage("--equilibrate must be 0 or more") }
        rdfPath = args.string("rdf")
        rdfSettings = RDFSettings(rMax: try args.positiveDouble("rdf-rmax")!, bins: try args.positiveInt("rdf-bins")!, sigma: try args.positiveDouble("rdf-sigma")!)
        if let r = rdfPath {
            if sameFile(r, input) { throw usage("--rdf \(r) is the input; name another file") }
            try requireWritableDirectory(r, option: "--rdf", command: "md")
        }
        trajectoryPath = args.string("out")
        if let t = trajectoryPath {
            if let f = StructureFormat(path: t), f != .extxyz { throw usage("-o \(t): trajectories are extended XYZ; name the file .xyz or .extxyz") }
            if sameFile(t, input) { throw usage("-o \(t) is the input; name another file") }
            try requireWritableDirectory(t, option: "-o", command: "md")
        }
    }

    /// The frame the replicas start from (calculator results dropped).
    func startStructure() throws -> Structure {
        func usage(_ m: String) -> UsageError { UsageError(command: "md", message: m) }
        let all = try StructureIO.read(input)
        guard let picked = frames.indices(count: all.count), picked.count == 1 else {
            throw usage("--frames \(framesText) must select one frame of \(input) (\(all.count) frame(s))")
        }
        var start = all[picked[0]]
        start.removeCalculatorResults()
        guard start.count > 1 else { throw usage("\(input) needs at least two atoms") }
        return start
    }

    var simulatedPicoseconds: Double { Double(steps) * dt / 1000 }
}

/// What `md` gathers while the replicas run: trajectory frames, RDF sums, mean temperatures, energy drift.
final class MDRecorder {
    let md: MolecularDynamics
    let job: MDJob
    let trajectory: AtomicFileWriter?
    var trajectoryFrames = 0
    var writeError: Error?
    var rdfSum: [Double]
    var rdfFrames = 0
    var temperatureSum: [Double], temperatureCount: [Int]
    let h0: [Double]
    var maxDrift: [Double]

    init(md: MolecularDynamics, job: MDJob) throws {
        self.md = md
        self.job = job
        trajectory = try job.trajectoryPath.map { try AtomicFileWriter(path: $0) }
        rdfSum = [Double](repeating: 0, count: job.rdfSettings.radii.count)
        temperatureSum = [Double](repeating: 0, count: job.replicas)
        temperatureCount = [Int](repeating: 0, count: job.replicas)
        h0 = (0..<job.replicas).map { md.conservedEnergy($0) }
        maxDrift = [Double](repeating: 0, count: job.replicas)
    }

    func write(_ rs: [Int]) {
        guard let trajectory, writeError == nil else { return }
        do {
            try trajectory.append(try StructureIO.text(rs.map { md.frame($0) }, format: .extxyz, path: trajectory.path))
            trajectoryFrames += rs.count
        } catch { writeError = error }
    }

    /// After every step: temperatures and drift; every --interval steps a trajectory frame and RDF sample.
    func observe(step: Int, running: [Int]) {
        let n = Double(md.atomCount)
        for r in running {
            temperatureSum[r] += md.temperature(r)
            temperatureCount[r] += 1
            maxDrift[r] = max(maxDrift[r], abs(md.conservedEnergy(r) - h0[r]) / n)
        }
        guard step % job.interval == 0 else { return }
        write(running)
        guard job.rdfPath != nil else { return }
        for r in running {
            for (k, v) in RadialDistribution.values(md.frame(r), settings: job.rdfSettings).enumerated() { rdfSum[k] += v }
            rdfFrames += 1
        }
    }

    /// The trajectory and the RDF table, written into place.
    func finish() throws {
        if let e = writeError { throw e }
        try trajectory?.commit()
        if let r = job.rdfPath {
            guard rdfFrames > 0 else { throw UsageError(command: "md", message: "--rdf: no frames (run at least --interval \(job.interval) steps)") }
            try AtomicFile.write(RDFTable.text(radii: job.rdfSettings.radii, columns: [("g", rdfSum.map { $0 / Double(rdfFrames) })]), to: r)
        }
    }

    func meanTemperature(_ r: Int) -> Double { temperatureCount[r] > 0 ? temperatureSum[r] / Double(temperatureCount[r]) : md.temperature(r) }
}

func runMD(_ args: ParsedArguments) throws -> Int32 {
    let job = try MDJob(args)
    let start = try job.startStructure()
    let (spec, potential) = try job.potential ?? siliconDefault(structures: [start], name: job.input, command: "md")
    if let w = try speciesCheck(potential, spec: spec, structure: start, name: job.input, command: "md") { printError("relaxft md: warning: \(w)") }

    let json = args.has("json"), quiet = args.has("quiet")
    let log = Terminal(handle: json ? FileHandle.standardError : FileHandle.standardOutput)
    let settings = MDSettings(timestep: job.dt, temperature: job.temperature, thermostat: job.thermostat, skin: job.skin)
    let md = MolecularDynamics(starts: Array(repeating: start, count: job.replicas), potential: potential, settings: settings, seed: job.seed,
                               initialTemperature: job.initialTemperature)
    let bonds = BondSet.detect(start, cutoff: job.bondCutoff)
    let monitor = StabilityMonitor(bonds: bonds, criterion: InstabilityCriterion(maxBondDeviation: bonds.count > 0 ? job.threshold : nil, minimumDistance: job.minDistance),
                                   structure: start)
    let recorder = try MDRecorder(md: md, job: job)
    if !quiet {
        log.line("relaxft md: \(job.input) (\(start.count) atoms, \(formula(start))), potential \(spec); \(thermostatDescription(job.thermostat)) at \(job.temperature) K, "
                 + "dt \(job.dt) fs, \(job.steps) steps (\(formatPicoseconds(job.simulatedPicoseconds)) ps) × \(job.replicas) replica(s); \(bonds.count) reference bonds")
        log.line("  step   time[ps]     T[K]   Epot/N[eV]   \(job.thermostat == .none ? "Etot/N[eV]" : job.thermostat.name == "nose-hoover" ? " Hcons/N[eV]" : "Etot/N[eV]")   maxdev[Å]  running     ps/day")
    }
    if job.equilibrate > 0 {
        let eq = md.runSegment(Array(0..<job.replicas), steps: job.equilibrate, monitor: nil, stopUnstable: false)
        if let bad = eq.nonFinite.firstIndex(of: true) {
            printError("relaxft md: replica \(bad) reached a non-finite energy or force during the \(job.equilibrate) equilibration steps")
            return 1
        }
        for r in 0..<job.replicas { md.replicas[r].step = 0 }
        if !quiet { log.line("  (\(job.equilibrate) equilibration steps done)") }
    }
    recorder.write(Array(0..<job.replicas))
    let clock = Date()
    var maxDev = 0.0
    let n = Double(start.count)
    let result = md.runSegment(Array(0..<job.replicas), steps: job.steps, monitor: monitor, checkInterval: 10, stopUnstable: args.has("stop-unstable")) { step, running in
        recorder.observe(step: step, running: running)
        guard !quiet && (step % job.logInterval == 0 || step == job.steps) && !running.isEmpty else { return }
        let elapsed = Date().timeIntervalSince(clock)
        let psPerDay = Double(step) * job.dt / 1000 / max(elapsed, 1e-9) * 86400
        let c = Double(running.count)
        let tMean = running.reduce(0.0) { $0 + md.temperature($1) } / c
        let ep = running.reduce(0.0) { $0 + md.replicas[$1].potentialEnergy } / c / n
        let et = running.reduce(0.0) { $0 + md.conservedEnergy($1) } / c / n
        for r in running { maxDev = max(maxDev, monitor.check(md.positions(r)).maxBondDeviation) }
        log.line(cFormat("%6ld %10.4f %8.1f %12.6f %12.6f %11.4f %4ld/%-4ld %10.3g", step, Double(step) * job.dt / 1000, tMean, ep, et, maxDev,
                         running.count, job.replicas, psPerDay))
    }
    try recorder.finish()
    return mdSummary(job, result: result, recorder: recorder, seconds: Date().timeIntervalSince(clock), atoms: start.count, log: log, json: json, quiet: quiet)
}

/// Per replica: steps, mean temperature, energy drift, the time of its first instability; then the run's
/// speed and, with --json, the summary object. Returns the exit code (1 when a replica stopped early).
func mdSummary(_ job: MDJob, result: SegmentResult, recorder: MDRecorder, seconds: Double, atoms: Int, log: Terminal, json: Bool, quiet: Bool) -> Int32 {
    let dt = job.dt, simulated = job.simulatedPicoseconds
    // Speed from the steps actually taken (replicas stopped early count what they ran).
    let simulatedTotal = Double(result.stepsTaken.reduce(0, +)) * dt / 1000
    let psPerDayTotal = seconds > 0 ? simulatedTotal / seconds * 86400 : .infinity
    let psPerDay = psPerDayTotal / Double(job.replicas)
    var exit: Int32 = 0
    var reports: [String] = []
    // Time to the first instability, or the whole run for a stable replica (a lower bound).
    var stableTimes: [Double] = []
    let langevin = job.thermostat.name == "langevin"
    for r in 0..<job.replicas {
        let taken = result.stepsTaken[r]
        let meanT = recorder.meanTemperature(r)
        var line = String(format: "replica %d: %d steps (%.4g ps), mean T %.1f K", r, taken, Double(taken) * dt / 1000, meanT)
        // Langevin exchanges energy with its bath: no conserved quantity to report.
        if !langevin {
            line += String(format: ", %@ max deviation %.2e eV/atom", job.thermostat == .none ? "total-energy" : "conserved-energy", recorder.maxDrift[r])
        }
        var unstableTime: Double? = nil
        if let u = result.unstableStep[r] {
            unstableTime = Double(u) * dt / 1000
            line += String(format: "; unstable at %.4g ps", unstableTime!)
            if result.nonFinite[r] { line += " (non-finite energy or forces: stopped)" }
            else if result.unstableAtoms[r].isEmpty, let d = job.minDistance { line += String(format: " (two atoms closer than %.3g Å)", d) }
            else { line += String(format: " (max bond deviation %.3f Å, atoms %@)", result.maxBondDeviation[r], result.unstableAtoms[r].prefix(8).map(String.init).joined(separator: " ")) }
        } else {
            line += String(format: "; stable (max bond deviation %.3f Å)", result.maxBondDeviation[r])
        }
        stableTimes.append(unstableTime ?? simulated)
        if taken < job.steps { exit = 1 }
        if !quiet || json { log.line(line) }
        reports.append(jsonObject([
            ("replica", "\(r)"), ("steps", "\(taken)"), ("time_ps", jsonNumber(Double(taken) * dt / 1000)), ("mean_temperature", jsonNumber(meanT)),
            ("max_energy_drift_per_atom", langevin ? "null" : jsonNumber(recorder.maxDrift[r])), ("unstable_at_ps", unstableTime.map(jsonNumber) ?? "null"),
            ("stable_time_ps", jsonNumber(stableTimes[r])), ("non_finite", "\(result.nonFinite[r])"), ("max_bond_deviation", jsonNumber(result.maxBondDeviation[r])),
        ]))
    }
    let sortedTimes = stableTimes.sorted()
    let medianStable = sortedTimes.count % 2 == 1 ? sortedTimes[sortedTimes.count / 2] : 0.5 * (sortedTimes[sortedTimes.count / 2 - 1] + sortedTimes[sortedTimes.count / 2])
    let unstableCount = result.unstableStep.compactMap { $0 }.count
    var done = String(format: "relaxft md: %d replica(s) × %.4g ps in %.1f s: %.3g ps/day per replica (%.3g ps/day in total)", job.replicas, simulated, seconds, psPerDay, psPerDayTotal)
    if let t = job.trajectoryPath { done += "; trajectory \(t) (\(recorder.trajectoryFrames) frames)" }
    if unstableCount > 0 { done += String(format: "; %d unstable, median time stable %.4g ps", unstableCount, medianStable) }
    if let r = job.rdfPath { done += "; RDF \(r) (\(recorder.rdfFrames) frames)" }
    if exit != 0 { done += "; exit code 1: a replica stopped early" }
    log.line(done)
    if json {
        print(jsonObject([("atoms", "\(atoms)"), ("replicas", "\(job.replicas)"), ("steps", "\(job.steps)"), ("timestep_fs", jsonNumber(dt)),
                          ("thermostat", jsonString(job.thermostat.name)), ("temperature", jsonNumber(job.temperature)), ("seconds", jsonNumber(seconds)),
                          ("ps_per_day", jsonNumber(psPerDay)), ("trajectory_frames", "\(recorder.trajectoryFrames)"), ("rdf_frames", "\(recorder.rdfFrames)"),
                          ("unstable_replicas", "\(unstableCount)"), ("median_stable_time_ps", jsonNumber(medianStable)),
                          ("replica_results", "[" + reports.joined(separator: ", ") + "]")]))
    }
    return exit
}

/// --thermostat with --friction, --tdamp and --chain.
func parseThermostat(_ args: ParsedArguments, command: String, timestep: Double) throws -> Thermostat {
    switch args.string("thermostat") ?? "langevin" {
    case "none", "nve", "verlet": return .none
    case "langevin": return .langevin(friction: try args.positiveDouble("friction") ?? 0.01)
    case "nose-hoover", "nosehoover", "nh":
        return .noseHoover(damping: try args.positiveDouble("tdamp") ?? 100 * timestep, chain: try args.positiveInt("chain") ?? 3)
    case let t: throw UsageError(command: command, message: "--thermostat expects langevin, nose-hoover or none, got '\(t)'")
    }
}

func thermostatDescription(_ t: Thermostat) -> String {
    switch t {
    case .none: return "NVE (velocity Verlet)"
    case .langevin(let g): return "Langevin BAOAB (γ = \(g)/fs)"
    case .noseHoover(let tau, let m): return "Nosé–Hoover chain (τ = \(tau) fs, M = \(m))"
    }
}

func formatPicoseconds(_ x: Double) -> String { String(format: "%.4g", x) }
