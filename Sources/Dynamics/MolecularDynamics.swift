import Atoms
import Foundation
import Potentials
import Tape

/// How the temperature is controlled.
public enum Thermostat: Codable, Sendable, Equatable {
    /// Velocity Verlet: constant energy (NVE).
    case none
    /// Langevin dynamics with the BAOAB splitting (Leimkuhler & Matthews, Appl. Math. Res. Express 2013);
    /// friction γ in 1/fs.
    case langevin(friction: Double)
    /// Nosé–Hoover chain (Martyna, Klein & Tuckerman, J. Chem. Phys. 97, 2635 (1992)), integrated with the
    /// Trotter splitting and Suzuki–Yoshida weights of Martyna et al., Mol. Phys. 87, 1117 (1996);
    /// damping time τ in fs, chain length M.
    case noseHoover(damping: Double, chain: Int)

    public var name: String {
        switch self {
        case .none: return "none"
        case .langevin: return "langevin"
        case .noseHoover: return "nose-hoover"
        }
    }
}

/// Settings of a molecular-dynamics run.
public struct MDSettings: Codable, Sendable, Equatable {
    /// Time step, fs.
    public var timestep: Double
    /// Target temperature of the thermostat, K (also the default initial temperature).
    public var temperature: Double
    public var thermostat: Thermostat
    /// Verlet skin of the neighbour lists, Å.
    public var skin: Double

    public init(timestep: Double = 1, temperature: Double = 300, thermostat: Thermostat = .langevin(friction: 0.01), skin: Double = 0.5) {
        self.timestep = timestep
        self.temperature = temperature
        self.thermostat = thermostat
        self.skin = skin
    }
}

/// The dynamical state of one replica, complete enough to continue a run bit for bit.
public struct ReplicaState: Codable, Sendable, Equatable {
    /// Positions [N·3], Å; wrapped into the cell (periodic axes) whenever the neighbour list is rebuilt.
    public var positions: [Double]
    /// Velocities [N·3] in Å per ASE time unit (ASE's convention: momenta = masses · velocities).
    public var velocities: [Double]
    /// Forces at `positions` [N·3], eV/Å.
    public var forces: [Double]
    public var potentialEnergy: Double
    /// Steps taken since the replica was started (not reset by restarts from a stored state).
    public var step: Int
    /// Nosé–Hoover chain coordinates ξ_j and velocities v_ξj (empty for other thermostats).
    public var chainPositions: [Double]
    public var chainVelocities: [Double]
    /// Per-replica random numbers (Langevin noise), so a replica's path does not depend on the others.
    public var rng: SeededGenerator
    /// Whole cell vectors the positions were shifted by when wrapped [N·3] (unwrapped = positions + images·cell).
    public var images: [Int]
}

/// Molecular dynamics of R independent replicas of one system, advanced together: each step evaluates the
/// forces of all active replicas in one batched call of the potential (one graph of R structures).
///
/// Units as in ASE: eV, Å, u; velocities in Å per ASE time unit; time steps and friction are given in fs.
public final class MolecularDynamics {
    /// The system: species, cell, periodicity, masses (positions are per replica).
    public let structure: Structure
    public private(set) var potential: any Potential
    public let settings: MDSettings
    public var replicas: [ReplicaState]
    public let masses: [Double]
    /// Neighbour lists of the replicas and their batched graph (shared with relaxations: `VerletGraphs`).
    var graphs: VerletGraphs
    /// Force evaluations (batched calls) so far.
    public private(set) var forceCalls = 0

    public var atomCount: Int { structure.count }
    public var replicaCount: Int { replicas.count }

    /// Kinetic degrees of freedom per replica: 3N for Langevin (momentum is not conserved), 3N − 3 otherwise
    /// (the total momentum is zeroed at the start and conserved by Verlet and Nosé–Hoover).
    public var degreesOfFreedom: Int {
        if case .langevin = settings.thermostat { return 3 * atomCount }
        return Swift.max(3 * atomCount - 3, 1)
    }

    /// New replicas at the positions of `starts` (one structure per replica, same species, cell and pbc as
    /// the first), velocities drawn from Maxwell–Boltzmann at `initialTemperature` (default: the target)
    /// with replica r seeded by (seed, r), total momentum zero.
    public init(starts: [Structure], potential: any Potential, settings: MDSettings, seed: UInt64, initialTemperature: Double? = nil) {
        precondition(!starts.isEmpty, "at least one replica")
        let s0 = starts[0]
        for s in starts {
            precondition(s.numbers == s0.numbers && s.pbc == s0.pbc && s.cell.maxAbsDifference(s0.cell) < 1e-9,
                         "replicas must share species, cell and periodicity")
        }
        structure = s0
        self.potential = potential
        self.settings = settings
        masses = s0.masses
        graphs = VerletGraphs(structure: s0, replicas: starts.count, cutoff: potential.cutoff, skin: settings.skin)
        let t0 = initialTemperature ?? settings.temperature
        replicas = starts.enumerated().map { r, s in
            var rng = SeededGenerator(seed: seed &+ 0x9E37_79B9 &* UInt64(r + 1))
            let v = MolecularDynamics.maxwellBoltzmann(masses: s0.masses, temperature: t0, rng: &rng)
            let m = MolecularDynamics.chainLength(settings.thermostat)
            return ReplicaState(positions: s.positions.array, velocities: v, forces: [Double](repeating: 0, count: 3 * s.count),
                                potentialEnergy: 0, step: 0, chainPositions: [Double](repeating: 0, count: m),
                                chainVelocities: [Double](repeating: 0, count: m), rng: rng, images: [Int](repeating: 0, count: 3 * s.count))
        }
        refreshForces()
    }

    /// Replicas continued from stored states (forces are taken from the states).
    public init(structure: Structure, potential: any Potential, settings: MDSettings, states: [ReplicaState]) {
        self.structure = structure
        self.potential = potential
        self.settings = settings
        masses = structure.masses
        replicas = states
        graphs = VerletGraphs(structure: structure, replicas: states.count, cutoff: potential.cutoff, skin: settings.skin)
    }

    static func chainLength(_ t: Thermostat) -> Int {
        if case .noseHoover(_, let m) = t { return Swift.max(m, 1) }
        return 0
    }

    /// Velocities [N·3] (ASE units) from the Maxwell–Boltzmann distribution at `temperature`, with the total
    /// momentum removed (as ASE's MaxwellBoltzmannDistribution followed by Stationary).
    public static func maxwellBoltzmann(masses: [Double], temperature: Double, rng: inout SeededGenerator) -> [Double] {
        let n = masses.count
        var v = [Double](repeating: 0, count: 3 * n)
        let kT = Units.kB * temperature
        for a in 0..<n {
            let s = (kT / masses[a]).squareRoot()
            for k in 0..<3 { v[3 * a + k] = s * rng.normal() }
        }
        guard n > 1 else { return v }
        var p = [0.0, 0.0, 0.0]
        var mt = 0.0
        for a in 0..<n { mt += masses[a]; for k in 0..<3 { p[k] += masses[a] * v[3 * a + k] } }
        for a in 0..<n { for k in 0..<3 { v[3 * a + k] -= p[k] / mt } }
        return v
    }

    /// Swaps the potential (e.g. after a training step): neighbour lists are rebuilt for its cutoff and the
    /// forces of every replica recomputed.
    public func setPotential(_ p: any Potential) {
        potential = p
        graphs = VerletGraphs(structure: structure, replicas: replicas.count, cutoff: p.cutoff, skin: settings.skin)
        refreshForces()
    }

    /// Replaces replica states (restarts from stored states).
    public func setStates(_ states: [ReplicaState], forIndices idx: [Int]) {
        for (k, r) in idx.enumerated() {
            replicas[r] = states[k]
            graphs.reset(r)
        }
    }

    /// Recomputes energies and forces of all replicas (after positions or the potential changed).
    public func refreshForces() {
        _ = evaluate(Array(0..<replicas.count))
    }

    // MARK: - Observables of the state

    public func kineticEnergy(_ r: Int) -> Double {
        let v = replicas[r].velocities
        var e = 0.0
        for a in 0..<atomCount {
            e += masses[a] * (v[3 * a] * v[3 * a] + v[3 * a + 1] * v[3 * a + 1] + v[3 * a + 2] * v[3 * a + 2])
        }
        return 0.5 * e
    }

    /// Instantaneous kinetic temperature 2·E_kin/(N_f·k_B), K.
    public func temperature(_ r: Int) -> Double { 2 * kineticEnergy(r) / (Double(degreesOfFreedom) * Units.kB) }

    /// E_kin + U, eV.
    public func totalEnergy(_ r: Int) -> Double { kineticEnergy(r) + replicas[r].potentialEnergy }

    /// The quantity the integrator conserves: E_kin + U, plus for Nosé–Hoover chains Σ Q_j v_ξj²/2 + N_f·kT·ξ_1
    /// + kT·Σ_{j>1} ξ_j (Martyna et al. 1992, Eq. 2.9). Not defined for Langevin (returns E_kin + U).
    public func conservedEnergy(_ r: Int) -> Double {
        var e = totalEnergy(r)
        if case .noseHoover(let tau, let m) = settings.thermostat {
            let kT = Units.kB * settings.temperature
            let q = chainMasses(tau: tau, chain: m)
            let s = replicas[r]
            for j in 0..<m {
                e += 0.5 * q[j] * s.chainVelocities[j] * s.chainVelocities[j]
                e += (j == 0 ? Double(degreesOfFreedom) : 1) * kT * s.chainPositions[j]
            }
        }
        return e
    }

    /// Simulated time of replica r, fs.
    public func time(_ r: Int) -> Double { Double(replicas[r].step) * settings.timestep }

    /// Positions of replica r as [N, 3].
    public func positions(_ r: Int) -> Tensor { Tensor(shape: [atomCount, 3], replicas[r].positions) }

    /// Replica r as a structure: positions (wrapped into the cell along periodic axes), momenta (u·Å per ASE
    /// time unit, as ASE's extxyz stores them), forces and energy, and the info keys replica, step, time_fs,
    /// temperature and total_energy.
    public func frame(_ r: Int) -> Structure {
        var s = structure
        s.removeCalculatorResults()
        s.arrays = OrderedDictionary()
        s.positions = positions(r)
        let st = replicas[r]
        var p = [Double](repeating: 0, count: 3 * atomCount)
        for a in 0..<atomCount { for k in 0..<3 { p[3 * a + k] = masses[a] * st.velocities[3 * a + k] } }
        s.arrays["momenta"] = .doubles(Tensor(shape: [atomCount, 3], p))
        s.forces = Tensor(shape: [atomCount, 3], st.forces)
        s.energy = st.potentialEnergy
        s.info["replica"] = .int(r)
        s.info["step"] = .int(st.step)
        s.info["time_fs"] = .double(time(r))
        s.info["temperature"] = .double(temperature(r))
        s.info["total_energy"] = .double(totalEnergy(r))
        return s
    }

    // MARK: - Integration

    /// Advances the replicas `active` by one step. Returns the replicas whose positions, energy or forces
    /// became non-finite (they are left as they are and should not be advanced further).
    @discardableResult
    public func step(_ active: [Int]) -> [Int] {
        let dt = settings.timestep * Units.fs
        let n = atomCount
        let kT = Units.kB * settings.temperature
        for r in active {
            switch settings.thermostat {
            case .none:
                kick(r, 0.5 * dt)
                drift(r, dt)
            case .langevin(let gamma):
                // B A O A B: half kick, half drift, exact Ornstein–Uhlenbeck update, half drift, (forces), half kick.
                kick(r, 0.5 * dt)
                drift(r, 0.5 * dt)
                let c1 = Foundation.exp(-gamma * settings.timestep)
                let c2 = (1 - c1 * c1).squareRoot()
                var s = replicas[r]
                for a in 0..<n {
                    let sd = c2 * (kT / masses[a]).squareRoot()
                    for k in 0..<3 { s.velocities[3 * a + k] = c1 * s.velocities[3 * a + k] + sd * s.rng.normal() }
                }
                replicas[r] = s
                drift(r, 0.5 * dt)
            case .noseHoover(let tau, let m):
                chainHalfStep(r, dt: dt, tau: tau, chain: m)
                kick(r, 0.5 * dt)
                drift(r, dt)
            }
        }
        let failed = evaluate(active)
        let failedSet = Set(failed)
        for r in active where !failedSet.contains(r) {
            kick(r, 0.5 * dt)
            if case .noseHoover(let tau, let m) = settings.thermostat { chainHalfStep(r, dt: dt, tau: tau, chain: m) }
            replicas[r].step += 1
        }
        for r in failed { replicas[r].step += 1 }
        return failed
    }

    /// v += h·F/m
    func kick(_ r: Int, _ h: Double) {
        var s = replicas[r]
        for a in 0..<atomCount {
            let c = h / masses[a]
            for k in 0..<3 { s.velocities[3 * a + k] += c * s.forces[3 * a + k] }
        }
        replicas[r] = s
    }

    /// x += h·v
    func drift(_ r: Int, _ h: Double) {
        var s = replicas[r]
        for i in 0..<s.positions.count { s.positions[i] += h * s.velocities[i] }
        replicas[r] = s
    }

    func chainMasses(tau: Double, chain m: Int) -> [Double] {
        // Q_1 = N_f·kT·τ², Q_j = kT·τ² (Martyna et al. 1992, Eq. 2.10), τ in ASE time units.
        let kT = Units.kB * settings.temperature
        let t = tau * Units.fs
        return (0..<m).map { j in (j == 0 ? Double(degreesOfFreedom) : 1) * kT * t * t }
    }

    /// Propagates the chain and scales the velocities over half a step (Martyna et al. 1996, Sec. 4: the
    /// Trotter factor exp(iL_NHC·Δt/2) with third-order Suzuki–Yoshida weights, one sub-step each).
    func chainHalfStep(_ r: Int, dt: Double, tau: Double, chain m: Int) {
        let kT = Units.kB * settings.temperature
        let nf = Double(degreesOfFreedom)
        let q = chainMasses(tau: tau, chain: m)
        var s = replicas[r]
        var ke2 = 2 * kineticEnergy(r)
        var v = s.chainVelocities, xi = s.chainPositions
        let w1 = 1 / (2 - Foundation.pow(2, 1.0 / 3.0))
        var scale = 1.0
        for w in [w1, 1 - 2 * w1, w1] {
            let d = w * dt / 2
            // G_1 = (2·E_kin − N_f·kT)/Q_1, G_j = (Q_{j−1}·v_{j−1}² − kT)/Q_j
            func g(_ j: Int) -> Double { j == 0 ? (ke2 - nf * kT) / q[0] : (q[j - 1] * v[j - 1] * v[j - 1] - kT) / q[j] }
            v[m - 1] += 0.5 * d * g(m - 1)
            for j in stride(from: m - 2, through: 0, by: -1) {
                let e = Foundation.exp(-0.25 * d * v[j + 1])
                v[j] = (v[j] * e + 0.5 * d * g(j)) * e
            }
            let f = Foundation.exp(-d * v[0])
            scale *= f
            ke2 *= f * f
            for j in 0..<m { xi[j] += d * v[j] }
            for j in 0..<(m - 1) {
                let e = Foundation.exp(-0.25 * d * v[j + 1])
                v[j] = (v[j] * e + 0.5 * d * g(j)) * e
            }
            v[m - 1] += 0.5 * d * g(m - 1)
        }
        for i in 0..<s.velocities.count { s.velocities[i] *= scale }
        s.chainVelocities = v
        s.chainPositions = xi
        replicas[r] = s
    }

    /// Energies and forces of the listed replicas in one batched call; returns the replicas that failed
    /// (non-finite positions, energy or forces).
    func evaluate(_ idx: [Int]) -> [Int] {
        var failed: [Int] = []
        var good: [Int] = []
        for r in idx {
            if replicas[r].positions.allSatisfy(\.isFinite) { good.append(r) } else { failed.append(r) }
        }
        guard !good.isEmpty else { return failed }
        // A replica's neighbour list is rebuilt after wrapping its positions into the cell.
        let system = graphs.system(good, cell: structure.cell, positions: { self.positions($0) }, prepare: { r in
            self.wrap(r)
            return self.positions(r)
        })
        let n = atomCount
        var x = [Double]()
        x.reserveCapacity(3 * n * good.count)
        for r in good { x += replicas[r].positions }
        let cells = Tensor.concatenate(Array(repeating: structure.cell.reshaped([1, 3, 3]), count: good.count), axis: 0)
        let ev = potential.evaluate(system, positions: Tensor(shape: [n * good.count, 3], x), cells: cells)
        forceCalls += 1
        let f = ev.forces.array
        for (k, r) in good.enumerated() {
            let e = ev.energies[flat: k]
            let fr = Array(f[(3 * n * k)..<(3 * n * (k + 1))])
            replicas[r].potentialEnergy = e
            replicas[r].forces = fr
            if !e.isFinite || !fr.allSatisfy(\.isFinite) { failed.append(r) }
        }
        return failed.sorted()
    }

    /// Wraps replica r's positions into the cell along periodic axes, recording the shifts in `images`.
    func wrap(_ r: Int) {
        guard structure.pbc.contains(true), let inv = structure.cell.inverse3x3() else { return }
        let L = structure.cell.array, Li = inv.array
        var s = replicas[r]
        for a in 0..<atomCount {
            for k in 0..<3 where structure.pbc[k] {
                let f = s.positions[3 * a] * Li[k] + s.positions[3 * a + 1] * Li[3 + k] + s.positions[3 * a + 2] * Li[6 + k]
                let w = f.rounded(.down)
                guard w != 0, w.isFinite, Swift.abs(w) < 1e9 else { continue }
                for c in 0..<3 { s.positions[3 * a + c] -= w * L[3 * k + c] }
                s.images[3 * a + k] += Int(w)
            }
        }
        replicas[r] = s
    }

    /// Unwrapped positions of replica r [N, 3] (positions + images·cell), for displacements over time.
    public func unwrappedPositions(_ r: Int) -> Tensor {
        var x = replicas[r].positions
        let L = structure.cell.array
        for a in 0..<atomCount {
            for k in 0..<3 where replicas[r].images[3 * a + k] != 0 {
                let w = Double(replicas[r].images[3 * a + k])
                for c in 0..<3 { x[3 * a + c] += w * L[3 * k + c] }
            }
        }
        return Tensor(shape: [atomCount, 3], x)
    }
}
