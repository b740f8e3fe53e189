import Atoms
import Dynamics
import Foundation
import Potentials
import Tape

let mdCommand = Command(
    spec: CommandSpec(
        name: "md", summary: "molecular dynamics of one structure: NVE, Langevin or Nosé–Hoover, many replicas batched",
        usage: "STRUCTURE [--potential SPEC] [--temperature K] [--timestep FS] [--steps N] [--replicas R] "
            + "[--thermostat langevin|nose-hoover|none] [--seed N] [-o TRAJ.xyz] [--interval K] [--equilibrate N] [--rdf RDF.csv] [--json] [--quiet]",
        options: [
            OptionSpec("--potential", value: "SPEC", default: "sw", help: "sw, lj (with overrides such as sw:sigma=2.1,lambda=20), a .safetensors model file or a model name"),
            OptionSpec("--temperature", value: "K", default: "300", help: "thermostat temperature, and the initial temperature unless --initial-temperature is given"),
            OptionSpec("--initial-temperature", value: "K", help: "temperature of the Maxwell–Boltzmann initial velocities (default: --temperature)"),
            OptionSpec("--timestep", value: "FS", default: "1", help: "time step, fs"),
            OptionSpec("--steps", value: "N", default: "1000", help: "steps per replica"),
            OptionSpec("--replicas", value: "R", default: "1", help: "independent replicas (own velocities and noise), advanced together in one batched force call"),
            OptionSpec("--thermostat", value: "NAME", default: "langevin", help: "langevin (BAOAB), nose-hoover (chain) or none (NVE, velocity Verlet)"),
            OptionSpec("--friction", value: "1/FS", default: "0.01", help: "Langevin friction γ, 1/fs"),
            OptionSpec("--tdamp", value: "FS", help: "Nosé–Hoover damping time, fs (default: 100 time steps)"),
            OptionSpec("--chain", value: "M", default: "3", help: "Nosé–Hoover chain length"),
            OptionSpec("--seed", value: "N", default: "1", help: "seed of the initial velocities and the Langevin noise (replica r: seed and r)"),
            OptionSpec("--frame", value: "K", default: "0", help: "frame of STRUCTURE to start from (a Python index: -1 is the last)"),
            OptionSpec("-o", "--output", value: "TRAJ", help: "trajectory, extended XYZ: every --interval steps one frame per running replica"),
            OptionSpec("--interval", value: "K", default: "100", help: "steps between trajectory frames"),
            OptionSpec("--equilibrate", value: "N", default: "0", help: "steps run first and left out of the trajectory, the RDF and the summary"),
            OptionSpec("--rdf", value: "CSV", help: "mean radial distribution function of the frames taken every --interval steps (after --equilibrate), columns r,g: a reference for 'relaxft stable'"),
            OptionSpec("--rdf-rmax", value: "Å", default: "5", help: "largest radius of --rdf"),
            OptionSpec("--rdf-bins", value: "N", default: "100", help: "radii of --rdf, bin centres (k + ½)·rmax/N"),
            OptionSpec("--rdf-sigma", value: "Å", default: "0.05", help: "Gaussian smearing of --rdf (use the same in 'relaxft stable')"),
            OptionSpec("--log-interval", value: "K", help: "steps between log lines (default: about 20 lines per run)"),
            OptionSpec("--bond-threshold", value: "Å", default: "0.5", help: "a replica is unstable once a bond of STRUCTURE deviates more than this from its length there (StABlE's evaluation threshold)"),
            OptionSpec("--bond-cutoff", value: "Å", help: "bonds are pairs closer than this in STRUCTURE (default: 1.2 × sum of covalent radii)"),
            OptionSpec("--min-distance", value: "Å", help: "also unstable when two atoms come closer than this"),
            OptionSpec("--stop-unstable", help: "stop a replica when it becomes unstable (it is always stopped on non-finite energies or forces)"),
            OptionSpec("--skin", value: "Å", default: "0.5", help: "Verlet skin of the neighbour lists"),
            OptionSpec("--json", help: "a JSON summary on stdout; the log goes to stderr"),
            OptionSpec("--quiet", help: "no log lines (the summary is still printed)"),
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

            Exit codes: 0 when every replica finished its steps; 1 when a replica stopped early (non-finite energy,
            forces or velocities, an explosion: a kinetic temperature above 100 times --temperature and 10⁵ K; or
            unstable with --stop-unstable; the summary gives the time; the trajectory is written all the same); 2
            for bad options or input (elements the potential does not cover, replicas that would not fit in memory).
            """),
    run: runMD)

func runMD(_ args: ParsedArguments) throws -> Int32 {
    func usage(_ m: String) -> UsageError { UsageError(command: "md", message: m) }
    guard args.positionals.count == 1 else { throw usage("expects one STRUCTURE file, got \(args.positionals.count) argument(s)") }
    let input = args.positionals[0]
    let temperature = try args.positiveDouble("temperature")!
    let t0 = try args.double("initial-temperature") ?? temperature
    guard t0 >= 0 else { throw usage("--initial-temperature must be ≥ 0") }
    let dt = try args.positiveDouble("timestep")!
    guard let steps = try args.int("steps"), steps >= 0 else { throw usage("--steps must be 0 or more") }
    let replicas = try args.positiveInt("replicas")!
    let thermostat = try parseThermostat(args, command: "md", timestep: dt)
    guard let seed = UInt64(args.string("seed")!) else { throw usage("--seed expects a non-negative integer") }
    let interval = try args.positiveInt("interval")!
    let logInterval = try args.positiveInt("log-interval") ?? max(1, steps / 20)
    let threshold = try args.positiveDouble("bond-threshold")!
    let bondCutoff = try args.positiveDouble("bond-cutoff")
    let minDistance = try args.positiveDouble("min-distance")
    let skin = try args.double("skin")!
    guard skin >= 0 else { throw usage("--skin must be ≥ 0") }
    guard let frameIndex = try args.int("frame") else { throw usage("--frame expects an integer") }
    let spec = args.string("potential")!
    let potential: any Potential
    do { potential = try PotentialSpec.parse(spec) } catch let e as PotentialSpecError { throw usage("--potential: \(e.message)") }
    let equilibrate = try args.int("equilibrate") ?? 0
    guard equilibrate >= 0 else { throw usage("--equilibrate must be 0 or more") }
    let rdfPath = args.string("rdf")
    let rdfSettings: RDFSettings
    do {
        rdfSettings = try RDFSettings.checked(rMax: try args.positiveDouble("rdf-rmax")!, bins: try args.positiveInt("rdf-bins")!,
                                              sigma: try args.positiveDouble("rdf-sigma")!, option: ("--rdf-rmax", "--rdf-bins", "--rdf-sigma"))
    } catch let e as ResourceError { throw usage(e.message) }
    if let r = rdfPath {
        if sameFile(r, input) { throw usage("--rdf \(r) is the input; name another file") }
        try requireWritableDirectory(r, option: "--rdf", command: "md")
    }
    let trajectoryPath = args.string("output")
    if let t = trajectoryPath {
        if let f = StructureFormat(path: t), f != .extxyz { throw usage("-o \(t): trajectories are extended XYZ; name the file .xyz or .extxyz") }
        if sameFile(t, input) { throw usage("-o \(t) is the input; name another file") }
        try requireWritableDirectory(t, option: "-o", command: "md")
    }
    let frames = try StructureIO.read(input)
    let k = frameIndex < 0 ? frames.count + frameIndex : frameIndex
    guard k >= 0 && k < frames.count else { throw usage("--frame \(frameIndex): \(input) has \(frames.count) frame(s)") }
    var start = frames[k]
    start.removeCalculatorResults()
    guard start.count > 1 else { throw usage("\(input) needs at least two atoms") }
    if let w = try speciesCheck(potential, spec: spec, structure: start, name: input, command: "md") { printError("relaxft md: warning: \(w)") }

    let json = args.has("json"), quiet = args.has("quiet")
    let log = Terminal(handle: json ? FileHandle.standardError : FileHandle.standardOutput)
    let settings = MDSettings(timestep: dt, temperature: temperature, thermostat: thermostat, skin: skin)
    // Elements, positions and the memory of R batched replicas (and of the RDF's pair list), before any MD.
    do {
        try MolecularDynamics.checkRequest(start, replicas: replicas, potential: potential, settings: settings, name: input, potentialName: spec)
        if rdfPath != nil { try NeighborList.validate(start, cutoff: rdfSettings.pairCutoff, name: "\(input) (--rdf)") }
    } catch let e as PotentialInputError { throw usage(e.message) }
    catch let e as ResourceError { throw usage(e.message) }
    catch let e as NeighborListError { throw usage(e.message) }
    let md = MolecularDynamics(starts: Array(repeating: start, count: replicas), potential: potential, settings: settings, seed: seed, initialTemperature: t0)
    let bonds = BondSet.detect(start, cutoff: bondCutoff)
    let monitor = StabilityMonitor(bonds: bonds, criterion: InstabilityCriterion(maxBondDeviation: bonds.count > 0 ? threshold : nil, minimumDistance: minDistance), structure: start)
    let n = Double(start.count)
    let trajectory = try trajectoryPath.map { try AtomicFileWriter(path: $0) }
    var trajectoryFrames = 0
    var writeError: Error?
    func write(_ rs: [Int]) {
        guard let trajectory, writeError == nil else { return }
        do {
            try trajectory.append(try StructureIO.text(rs.map { md.frame($0) }, format: .extxyz, path: trajectory.path))
            trajectoryFrames += rs.count
        } catch { writeError = error }
    }
    if !quiet {
        log.line("relaxft md: \(input) (\(start.count) atoms, \(formula(start))), potential \(spec); \(thermostatDescription(thermostat)) at \(temperature) K, "
                 + "dt \(dt) fs, \(steps) steps (\(formatPicoseconds(Double(steps) * dt / 1000)) ps) × \(replicas) replica(s); \(bonds.count) reference bonds")
        log.line("  step   time[ps]     T[K]   Epot/N[eV]   \(thermostat == .none ? "Etot/N[eV]" : thermostat.name == "nose-hoover" ? " Hcons/N[eV]" : "Etot/N[eV]")   maxdev[Å]  running     ps/day")
    }
    if equilibrate > 0 {
        let eq = md.runSegment(Array(0..<replicas), steps: equilibrate, monitor: nil, stopUnstable: false)
        if let bad = eq.nonFinite.firstIndex(of: true) {
            let at = eq.unstableStep[bad].map { String(format: " at %.4g ps", Double($0) * dt / 1000) } ?? ""
            printError("relaxft md: replica \(bad) failed\(at) of the \(equilibrate) equilibration steps: \(eq.failure[bad] ?? "non-finite energy or forces")")
            return 1
        }
        for r in 0..<replicas { md.replicas[r].step = 0 }
        if !quiet { log.line("  (\(equilibrate) equilibration steps done)") }
    }
    write(Array(0..<replicas))
    var rdfSum = [Double](repeating: 0, count: rdfSettings.radii.count), rdfFrames = 0
    func addRDF(_ rs: [Int]) {
        guard rdfPath != nil else { return }
        for r in rs {
            for (k, v) in RadialDistribution.values(md.frame(r), settings: rdfSettings).enumerated() { rdfSum[k] += v }
            rdfFrames += 1
        }
    }
    var temperatureSum = [Double](repeating: 0, count: replicas), temperatureCount = [Int](repeating: 0, count: replicas)
    let h0 = (0..<replicas).map { md.conservedEnergy($0) }
    var maxDrift = [Double](repeating: 0, count: replicas)
    let clock = Date()
    var maxDev = 0.0
    let result = md.runSegment(Array(0..<replicas), steps: steps, monitor: monitor, checkInterval: 10, stopUnstable: args.has("stop-unstable")) { step, running in
        for r in running {
            temperatureSum[r] += md.temperature(r)
            temperatureCount[r] += 1
            maxDrift[r] = max(maxDrift[r], abs(md.conservedEnergy(r) - h0[r]) / n)
        }
        if step % interval == 0 {
            write(running)
            addRDF(running)
        }
        if !quiet && (step % logInterval == 0 || step == steps) && !running.isEmpty {
            let elapsed = Date().timeIntervalSince(clock)
            let psPerDay = Double(step) * dt / 1000 / max(elapsed, 1e-9) * 86400
            let c = Double(running.count)
            let tMean = running.reduce(0.0) { $0 + md.temperature($1) } / c
            let ep = running.reduce(0.0) { $0 + md.replicas[$1].potentialEnergy } / c / n
            let et = running.reduce(0.0) { $0 + md.conservedEnergy($1) } / c / n
            for r in running { maxDev = max(maxDev, monitor.check(md.positions(r)).maxBondDeviation) }
            log.line(cFormat("%6ld %10.4f %8.1f %12.6f %12.6f %11.4f %4ld/%-4ld %10.3g", step, Double(step) * dt / 1000, tMean, ep, et, maxDev,
                             running.count, replicas, psPerDay))
        }
    }
    if let e = writeError { throw e }
    try trajectory?.commit()
    if let r = rdfPath {
        guard rdfFrames > 0 else { throw usage("--rdf: no frames (run at least --interval \(interval) steps)") }
        try AtomicFile.write(RDFTable.text(radii: rdfSettings.radii, columns: [("g", rdfSum.map { $0 / Double(rdfFrames) })]), to: r)
    }
    let seconds = Date().timeIntervalSince(clock)
    let simulated = Double(steps) * dt / 1000
    // Speed from the steps actually taken (replicas stopped early count what they ran).
    let simulatedTotal = Double(result.stepsTaken.reduce(0, +)) * dt / 1000
    let psPerDayTotal = seconds > 0 ? simulatedTotal / seconds * 86400 : .infinity
    let psPerDay = psPerDayTotal / Double(replicas)
    var exit: Int32 = 0
    var reports: [String] = []
    // Time to the first instability, or the whole run for a stable replica (a lower bound).
    var stableTimes: [Double] = []
    for r in 0..<replicas {
        let taken = result.stepsTaken[r]
        let meanT = temperatureCount[r] > 0 ? temperatureSum[r] / Double(temperatureCount[r]) : md.temperature(r)
        var line = String(format: "replica %d: %d steps (%.4g ps), mean T %.1f K", r, taken, Double(taken) * dt / 1000, meanT)
        // Langevin exchanges energy with its bath: no conserved quantity to report.
        if thermostat.name != "langevin" {
            line += String(format: ", %@ max deviation %.2e eV/atom", thermostat == .none ? "total-energy" : "conserved-energy", maxDrift[r])
        }
        var unstableTime: Double? = nil
        if let u = result.unstableStep[r] {
            unstableTime = Double(u) * dt / 1000
            line += String(format: "; unstable at %.4g ps", unstableTime!)
            if result.nonFinite[r] { line += " (\(result.failure[r] ?? "non-finite energy or forces"): stopped)" }
            else if result.unstableAtoms[r].isEmpty, let d = minDistance { line += String(format: " (two atoms closer than %.3g Å)", d) }
            else { line += String(format: " (max bond deviation %.3f Å, atoms %@)", result.maxBondDeviation[r], result.unstableAtoms[r].prefix(8).map(String.init).joined(separator: " ")) }
        } else {
            line += String(format: "; stable (max bond deviation %.3f Å)", result.maxBondDeviation[r])
        }
        stableTimes.append(unstableTime ?? simulated)
        if taken < steps || result.nonFinite[r] { exit = 1 }
        if !quiet || json { log.line(line) }
        reports.append("{" + [
            ("replica", "\(r)"), ("steps", "\(taken)"), ("time_ps", jsonNumber(Double(taken) * dt / 1000)), ("mean_temperature", jsonNumber(meanT)),
            ("max_energy_drift_per_atom", thermostat.name == "langevin" ? "null" : jsonNumber(maxDrift[r])), ("unstable_at_ps", unstableTime.map(jsonNumber) ?? "null"), ("stable_time_ps", jsonNumber(stableTimes[r])),
            ("non_finite", "\(result.nonFinite[r])"), ("failure", result.failure[r].map(jsonString) ?? "null"),
            ("max_bond_deviation", jsonNumber(result.maxBondDeviation[r])),
        ].map { "\(jsonString($0.0)): \($0.1)" }.joined(separator: ", ") + "}")
    }
    let sortedTimes = stableTimes.sorted()
    let medianStable = sortedTimes.count % 2 == 1 ? sortedTimes[sortedTimes.count / 2] : 0.5 * (sortedTimes[sortedTimes.count / 2 - 1] + sortedTimes[sortedTimes.count / 2])
    let unstableCount = result.unstableStep.compactMap { $0 }.count
    var done = String(format: "relaxft md: %d replica(s) × %.4g ps in %.1f s: %.3g ps/day per replica (%.3g ps/day in total)", replicas, simulated, seconds, psPerDay, psPerDayTotal)
    if let t = trajectoryPath { done += "; trajectory \(t) (\(trajectoryFrames) frames)" }
    if unstableCount > 0 { done += String(format: "; %d unstable, median time stable %.4g ps", unstableCount, medianStable) }
    if let r = rdfPath { done += "; RDF \(r) (\(rdfFrames) frames)" }
    if exit != 0 { done += "; exit code 1: a replica stopped early" }
    log.line(done)
    if json {
        print("{" + [("atoms", "\(start.count)"), ("replicas", "\(replicas)"), ("steps", "\(steps)"), ("timestep_fs", jsonNumber(dt)),
                     ("thermostat", jsonString(thermostat.name)), ("temperature", jsonNumber(temperature)), ("seconds", jsonNumber(seconds)),
                     ("ps_per_day", jsonNumber(psPerDay)),
                     ("trajectory_frames", "\(trajectoryFrames)"), ("rdf_frames", "\(rdfFrames)"),
                     ("unstable_replicas", "\(unstableCount)"), ("median_stable_time_ps", jsonNumber(medianStable)), ("replica_results", "[" + reports.joined(separator: ", ") + "]")]
            .map { "\(jsonString($0.0)): \($0.1)" }.joined(separator: ", ") + "}")
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
