import Atoms
import Foundation
import Potentials
import Tape

/// Energy and force errors of a potential on labelled frames (DFT energies in `info["energy"]`, forces in
/// `arrays["forces"]`): energy MAE/RMSE per atom (meV/atom), force-component MAE/RMSE (eV/Å).
public struct ForceFieldMetrics: Sendable, CustomStringConvertible {
    public var frames = 0
    public var atoms = 0
    /// Frames with an energy label, and force components compared.
    public var energyFrames = 0
    public var forceComponents = 0
    public var energyMAE = 0.0
    public var energyRMSE = 0.0
    public var forceMAE = 0.0
    public var forceRMSE = 0.0

    public init() {}

    public var description: String {
        String(format: "%d frames, %d atoms: energy MAE %.2f meV/atom, RMSE %.2f meV/atom; force MAE %.4f eV/Å, RMSE %.4f eV/Å",
               frames, atoms, energyMAE, energyRMSE, forceMAE, forceRMSE)
    }

    /// Running sums, so that batches can be accumulated and finished once.
    public struct Accumulator: Sendable {
        var frames = 0, atoms = 0, eFrames = 0, fComps = 0
        var eAbs = 0.0, eSq = 0.0, fAbs = 0.0, fSq = 0.0

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

        public var metrics: ForceFieldMetrics {
            var m = ForceFieldMetrics()
            m.frames = frames; m.atoms = atoms; m.energyFrames = eFrames; m.forceComponents = fComps
            if eFrames > 0 { m.energyMAE = 1000 * eAbs / Double(eFrames); m.energyRMSE = 1000 * (eSq / Double(eFrames)).squareRoot() }
            if fComps > 0 { m.forceMAE = fAbs / Double(fComps); m.forceRMSE = (fSq / Double(fComps)).squareRoot() }
            return m
        }
    }

    /// Evaluates `potential` on `frames` in batches of `batch` structures (one graph per batch).
    public static func compute(potential: any Potential, frames: [Structure], batch: Int = 8) -> ForceFieldMetrics {
        var acc = Accumulator()
        var start = 0
        while start < frames.count {
            let chunk = Array(frames[start..<Swift.min(start + batch, frames.count)])
            let sys = AtomicSystem(structures: chunk, lists: chunk.map { NeighborList.build($0, cutoff: potential.cutoff) })
            let x = Tensor.concatenate(chunk.map(\.positions), axis: 0)
            let cells = Tensor.concatenate(chunk.map { $0.cell.reshaped([1, 3, 3]) }, axis: 0)
            let ev = potential.evaluate(sys, positions: x, cells: cells)
            for (k, s) in chunk.enumerated() {
                let range = sys.atomOffsets[k]..<sys.atomOffsets[k + 1]
                acc.add(atoms: s.count, energy: ev.energies[flat: k], reference: s.energy,
                        forces: ev.forces.slice(axis: 0, range), referenceForces: s.forces)
            }
            start += batch
        }
        return acc.metrics
    }
}
