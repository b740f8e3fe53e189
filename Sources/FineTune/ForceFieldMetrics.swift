import Atoms
import Cluster
import Foundation
import Potentials
import Tape

/// Energy, force and stress errors of a potential on labelled frames (DFT energies in `info["energy"]`, forces
/// in `arrays["forces"]`, stress in `info["stress"]`), as MACE's and nequip's evaluation scripts report them:
/// energy MAE/RMSE per atom (meV/atom), force-component MAE/RMSE (eV/Å), stress-component MAE/RMSE (meV/Å³,
/// all nine components).
public struct ForceFieldMetrics: Sendable, CustomStringConvertible {
    public var frames = 0
    public var atoms = 0
    /// Frames with an energy label, and force and stress components compared.
    public var energyFrames = 0
    public var forceComponents = 0
    public var stressComponents = 0
    public var energyMAE = 0.0
    public var energyRMSE = 0.0
    public var forceMAE = 0.0
    public var forceRMSE = 0.0
    public var stressMAE = 0.0
    public var stressRMSE = 0.0

    public init() {}

    public var description: String {
        String(format: "%d frames, %d atoms: energy MAE %.2f meV/atom, RMSE %.2f meV/atom; force MAE %.4f eV/Å, RMSE %.4f eV/Å",
               frames, atoms, energyMAE, energyRMSE, forceMAE, forceRMSE)
    }

    /// Running sums, so that batches can be accumulated and finished once.
    public struct Accumulator: Sendable {
        var frames = 0, atoms = 0, eFrames = 0, fComps = 0, sComps = 0
        var eAbs = 0.0, eSq = 0.0, fAbs = 0.0, fSq = 0.0, sAbs = 0.0, sSq = 0.0

        public init() {}

        /// Adds one frame: predicted and reference energies (eV) and forces [n, 3] (either label may be nil).
        public mutating func add(atoms n: Int, energy: Double, reference: Double?, forces: Tensor?, referenceForces: Tensor?) {
            frames += 1
            atoms += n
            if let r = reference {
                let e = (energy - r) / Double(n)
                eAbs += Swift.abs(e); eSq += e * e; eFrames += 1
            }
            if let f = forces, let fr = referenceForces {
                f.withUnsafeBufferPointer { a in fr.withUnsafeBufferPointer { b in
                    for k in 0..<a.count { let d = a[k] - b[k]; fAbs += Swift.abs(d); fSq += d * d }
                } }
                fComps += f.count
            }
        }

        /// Adds the stress of the frame added last: predicted and reference [3, 3] (eV/Å³).
        public mutating func addStress(_ stress: Tensor, reference: Tensor) {
            for (a, b) in zip(stress.array, reference.array) {
                let d = 1000 * (a - b)
                sAbs += Swift.abs(d); sSq += d * d
            }
            sComps += 9
        }

        public var metrics: ForceFieldMetrics {
            var m = ForceFieldMetrics()
            m.frames = frames; m.atoms = atoms; m.energyFrames = eFrames; m.forceComponents = fComps; m.stressComponents = sComps
            if eFrames > 0 { m.energyMAE = 1000 * eAbs / Double(eFrames); m.energyRMSE = 1000 * (eSq / Double(eFrames)).squareRoot() }
            if fComps > 0 { m.forceMAE = fAbs / Double(fComps); m.forceRMSE = (fSq / Double(fComps)).squareRoot() }
            if sComps > 0 { m.stressMAE = sAbs / Double(sComps); m.stressRMSE = (sSq / Double(sComps)).squareRoot() }
            return m
        }
    }

    /// Evaluates `potential` on `frames` in batches of `batch` structures (one graph per batch).
    public static func compute(potential: any Potential, frames: [Structure], batch: Int = 8) -> ForceFieldMetrics {
        score(frames, predictions: predictFrames(frames, potential: potential, batch: batch)).overall
    }

    /// Errors of `predictions` (frame i → prediction i) against the labels of `frames`: over all frames and per
    /// configuration type (`configType`; empty when no frame has one).
    public static func score(_ frames: [Structure], predictions: [FramePrediction]) -> (overall: ForceFieldMetrics, byConfigType: [String: ForceFieldMetrics]) {
        var all = Accumulator()
        var groups: [String: Accumulator] = [:]
        for (s, p) in zip(frames, predictions) {
            all.add(s, p)
            if let g = configType(s) { groups[g, default: Accumulator()].add(s, p) }
        }
        return (all.metrics, groups.mapValues(\.metrics))
    }

    /// The configuration type of a labelled frame, as MACE groups its errors: info `config_type`, else
    /// `defect` or `kind` (relaxft's defect data); nil when it has none.
    public static func configType(_ s: Structure) -> String? {
        for key in ["config_type", "defect", "kind"] { if let v = s.info[key]?.stringValue { return v } }
        return nil
    }
}

extension ForceFieldMetrics.Accumulator {
    mutating func add(_ s: Structure, _ p: FramePrediction) {
        add(atoms: s.count, energy: p.energy, reference: s.energy, forces: p.forces, referenceForces: s.forces)
        if let st = p.stress, let ref = s.stress { addStress(st, reference: ref) }
    }
}

/// A model's energy (eV), forces [N, 3] (eV/Å) and, when asked for, stress [3, 3] (eV/Å³, ASE's sign) for one frame.
public struct FramePrediction: Sendable {
    public var energy: Double
    public var forces: Tensor
    public var stress: Tensor?
}

/// `predictFrames` with the batches shared out over the ranks of `communicator` (contiguous shares of whole
/// batches, so every graph is the one a single process builds); every rank gets all predictions in frame order.
public func predictFrames(_ frames: [Structure], potential: any Potential, batch: Int = 8, threads: Int = 1, stress: Bool = false,
                          communicator comm: any Communicator, progress: (Int) -> Void = { _ in }) throws -> [FramePrediction] {
    struct Wire: Codable { var e: Double; var f: [Double]; var s: [Double]? }
    let batches = (frames.count + batch - 1) / batch
    let share = comm.shard(of: batches)
    let range = Swift.min(share.lowerBound * batch, frames.count)..<Swift.min(share.upperBound * batch, frames.count)
    let local = predictFrames(Array(frames[range]), potential: potential, batch: batch, threads: threads, stress: stress) { done in
        progress(done == range.count ? frames.count : done * frames.count / Swift.max(range.count, 1))
    }
    if comm.size == 1 { return local }
    let all = try comm.gatherInOrder(local.map { Wire(e: $0.energy, f: $0.forces.array, s: $0.stress?.array) })
    return zip(frames, all).map { fr, w in
        FramePrediction(energy: w.e, forces: Tensor(shape: [fr.count, 3], w.f), stress: w.s.map { Tensor(shape: [3, 3], $0) })
    }
}

/// Predictions for `frames`, frame i → prediction i, in batches of `batch` structures (one graph per batch)
/// spread over `threads` threads; with `stress`, stresses for the periodic frames that carry a stress label. `progress`
/// gets the number of frames done after each round of batches.
public func predictFrames(_ frames: [Structure], potential: any Potential, batch: Int = 8, threads: Int = 1, stress: Bool = false,
                          progress: (Int) -> Void = { _ in }) -> [FramePrediction] {
    let starts = Array(stride(from: 0, to: frames.count, by: batch))
    var out: [FramePrediction] = []
    var round = 0
    while round < starts.count {
        let chunk = Array(starts[round..<Swift.min(round + Swift.max(threads, 1), starts.count)])
        out += parallelMap(chunk.count, threads: threads) { c in
            let lo = chunk[c]
            let part = Array(frames[lo..<Swift.min(lo + batch, frames.count)])
            return predictBatch(part, potential: potential, stress: stress)
        }.flatMap { $0 }
        round += chunk.count
        progress(out.count)
    }
    return out
}

/// One batch: stresses (when asked for) only when every frame of it is periodic in 3D and labelled with one.
func predictBatch(_ chunk: [Structure], potential: any Potential, stress wanted: Bool) -> [FramePrediction] {
    let sys = AtomicSystem(structures: chunk, lists: chunk.map { NeighborList.build($0, cutoff: potential.cutoff) })
    let x = Tensor.concatenate(chunk.map(\.positions), axis: 0)
    let cells = Tensor.concatenate(chunk.map { $0.cell.reshaped([1, 3, 3]) }, axis: 0)
    let stress = wanted && chunk.allSatisfy { $0.stress != nil && $0.pbc == [true, true, true] }
    let ev = potential.evaluate(sys, positions: x, cells: cells, stress: stress)
    return chunk.indices.map { k in
        FramePrediction(energy: ev.energies[flat: k], forces: ev.forces.slice(axis: 0, sys.atomOffsets[k]..<sys.atomOffsets[k + 1]),
                        stress: ev.stresses.map { $0.slice(axis: 0, k..<(k + 1)).reshaped([3, 3]) })
    }
}
