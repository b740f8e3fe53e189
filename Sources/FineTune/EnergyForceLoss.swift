import Atoms
import Potentials
import Tape

/// Loss and parameter gradients of energy/force matching on `frames`:
/// `energyWeight · mean_frames (E − E_ref)² + forceWeight · mean_components (F − F_ref)²` (eV², (eV/Å)²), with the
/// metrics of the current weights. Frames are evaluated `chunk` at a time; the chunk terms are weighted so that
/// the sum is the mean over all frames. With `energyWeight` 0 frames need only forces.
/// Used by StABlE's QM term (Raja et al., TMLR 2025) and by the force regulariser of BPTT fine-tuning.
func energyForceLossAndGradient(_ model: any Potential, trainable names: [String], frames: [Structure],
                                energyWeight we: Double, forceWeight wf: Double, chunk batch: Int = 8)
    -> (loss: Double, grads: [String: Tensor], metrics: ForceFieldMetrics) {
    var acc = ForceFieldMetrics.Accumulator()
    var total: [String: Tensor] = [:]
    var lossSum = 0.0
    let components = frames.reduce(0) { $0 + 3 * $1.count }
    var startIdx = 0
    while startIdx < frames.count {
        let chunk = Array(frames[startIdx..<Swift.min(startIdx + batch, frames.count)])
        startIdx += batch
        let sys = AtomicSystem(structures: chunk, lists: chunk.map { NeighborList.build($0, cutoff: model.cutoff) })
        let tape = Tape()
        var params: [String: Variable] = [:], leaves: [Variable] = []
        for (k, v) in model.parameters { params[k] = names.contains(k) ? tape.variable(v) : Variable(constant: v) }
        for n in names { leaves.append(params[n]!) }
        let x = tape.variable(Tensor.concatenate(chunk.map(\.positions), axis: 0))
        let cells = Variable(constant: Tensor.concatenate(chunk.map { $0.cell.reshaped([1, 3, 3]) }, axis: 0))
        let e = model.energies(sys, positions: x, cells: cells, parameters: params)
        let f = -tape.gradient(of: e.sum(), wrt: [x], createGraph: true)[0]
        let fRef = Tensor.concatenate(chunk.map { $0.forces! }, axis: 0)
        let fShare = Double(fRef.count) / Double(components)
        var loss = (f - fRef).squared().mean() * (wf * fShare)
        if we > 0 {
            let eRef = Tensor(chunk.map { $0.energy! })
            loss = loss + (e - eRef).squared().mean() * (we * Double(chunk.count) / Double(frames.count))
        }
        for (k, st) in chunk.enumerated() {
            acc.add(atoms: st.count, energy: e.value[flat: k], reference: st.energy,
                    forces: f.value.slice(axis: 0, sys.atomOffsets[k]..<sys.atomOffsets[k + 1]), referenceForces: st.forces)
        }
        let g = tape.gradient(of: loss, wrt: leaves)
        for (k, n) in names.enumerated() { total[n] = total[n].map { $0 + g[k].value } ?? g[k].value }
        lossSum += loss.scalar
    }
    return (lossSum, total, acc.metrics)
}
