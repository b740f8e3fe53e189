import Atoms
import Foundation
import Potentials
import Tape

/// Gradients of ensemble averages with respect to the potential's parameters without differentiating
/// through the trajectory (StABlE's Boltzmann estimator, Raja et al. TMLR 2025, Eq. 6): for samples from
/// p_θ(x) ∝ exp(−βU_θ(x)),
///
///     ∇θ⟨O⟩ = −β (⟨O ∂U/∂θ⟩ − ⟨O⟩⟨∂U/∂θ⟩) = −β Cov(O, ∂U/∂θ).
///
/// β = 1/(k_B T) is kept explicit (StABlE's code drops it into the learning rate). Samples must be drawn at
/// that temperature and be roughly independent (frames far enough apart in time).
public enum BoltzmannEstimator {
    /// β = 1/(k_B T), 1/eV.
    public static func beta(temperature: Double) -> Double { 1 / (Units.kB * temperature) }

    /// The Jacobian ∇θ⟨O⟩ [d, P] from per-sample observables [S, d] and energy gradients ∂U_s/∂θ [S, P], with
    /// the standard error of each entry (std of (O_s − Ō)(g_s − ḡ) over √S, times β: samples assumed
    /// independent).
    public static func jacobian(observables: Tensor, energyGradients: Tensor, beta: Double) -> (jacobian: Tensor, standardError: Tensor) {
        precondition(observables.rank == 2 && energyGradients.rank == 2 && observables.shape[0] == energyGradients.shape[0],
                     "observables [S, d] and energy gradients [S, P] need the same number of samples")
        let s = observables.shape[0], d = observables.shape[1], p = energyGradients.shape[1]
        precondition(s > 1, "the estimator needs at least two samples")
        let o = observables.array, g = energyGradients.array
        var om = [Double](repeating: 0, count: d), gm = [Double](repeating: 0, count: p)
        for i in 0..<s {
            for k in 0..<d { om[k] += o[i * d + k] }
            for j in 0..<p { gm[j] += g[i * p + j] }
        }
        for k in 0..<d { om[k] /= Double(s) }
        for j in 0..<p { gm[j] /= Double(s) }
        var mean = [Double](repeating: 0, count: d * p), sq = [Double](repeating: 0, count: d * p)
        for i in 0..<s {
            for k in 0..<d {
                let a = o[i * d + k] - om[k]
                for j in 0..<p {
                    let z = a * (g[i * p + j] - gm[j])
                    mean[k * p + j] += z
                    sq[k * p + j] += z * z
                }
            }
        }
        var jac = [Double](repeating: 0, count: d * p), se = [Double](repeating: 0, count: d * p)
        let n = Double(s)
        for q in 0..<(d * p) {
            let m = mean[q] / n
            jac[q] = -beta * m
            let variance = Swift.max(sq[q] / n - m * m, 0) * n / (n - 1)
            se[q] = beta * (variance / n).squareRoot()
        }
        return (Tensor(shape: [d, p], jac), Tensor(shape: [d, p], se))
    }

    /// The loss L = mean_k (⟨O_k⟩ − ref_k)² (StABlE's ObservableMSELoss) and the coefficients c_s with
    /// ∇θL = Σ_s c_s ∂U_s/∂θ: writing w_s = Σ_k (2/d)(⟨O_k⟩ − ref_k) O_sk,
    /// ∇θL = Σ_k (2/d)(⟨O_k⟩ − ref_k) ∇θ⟨O_k⟩ = −(β/S) Σ_s (w_s − w̄) ∂U_s/∂θ,
    /// so the gradient is one backward pass over Σ_s c_s U_s, without the [S, P] matrix of per-sample
    /// gradients (same value as contracting `jacobian`, which `BoltzmannEstimatorTests` checks).
    public static func lossCoefficients(observables: Tensor, reference: [Double], beta: Double) -> (loss: Double, mean: [Double], coefficients: [Double]) {
        let s = observables.shape[0], d = observables.shape[1]
        precondition(reference.count == d, "reference has \(reference.count) values, observable \(d)")
        let o = observables.array
        var om = [Double](repeating: 0, count: d)
        for i in 0..<s { for k in 0..<d { om[k] += o[i * d + k] } }
        for k in 0..<d { om[k] /= Double(Swift.max(s, 1)) }
        let resid = (0..<d).map { om[$0] - reference[$0] }
        let loss = resid.reduce(0) { $0 + $1 * $1 } / Double(d)
        var w = [Double](repeating: 0, count: s)
        for i in 0..<s { for k in 0..<d { w[i] += 2 / Double(d) * resid[k] * o[i * d + k] } }
        let wm = w.reduce(0, +) / Double(Swift.max(s, 1))
        return (loss, om, w.map { -beta / Double(s) * ($0 - wm) })
    }

    /// Per-sample gradients ∂y_s/∂θ [S, P] of the entries of a vector y [S] recorded on `tape`, with respect
    /// to `wrt` (flattened and concatenated in order): one backward sweep per sample.
    public static func perSampleGradients(of y: Variable, wrt xs: [Variable], tape: Tape) -> Tensor {
        let s = y.count
        let p = xs.reduce(0) { $0 + $1.count }
        var out = [Double]()
        out.reserveCapacity(s * p)
        for i in 0..<s {
            var seed = Tensor.zeros(y.shape)
            seed[flat: i] = 1
            for g in tape.vjp(of: [y], seeds: [Variable(constant: seed)], wrt: xs) { out += g.value.array }
        }
        return Tensor(shape: [s, p], out)
    }

    /// Per-sample ∂U_s/∂θ [S, P] of the potential's parameters `names` (flattened in that order) at the
    /// configurations `frames`, evaluated `batch` structures per graph.
    public static func energyGradients(_ potential: any Potential, frames: [Structure], names: [String], batch: Int = 8) -> Tensor {
        var rows: [Double] = []
        var start = 0
        while start < frames.count {
            let chunk = Array(frames[start..<Swift.min(start + batch, frames.count)])
            let tape = Tape()
            let (e, leaves) = batchedEnergies(potential, chunk, names: names, tape: tape)
            rows += perSampleGradients(of: e, wrt: leaves, tape: tape).array
            start += batch
        }
        let p = names.reduce(0) { $0 + potential.parameters[$1]!.count }
        return Tensor(shape: [frames.count, p], rows)
    }

    /// Σ_s c_s ∂U_s/∂θ for the parameters `names`, one backward sweep per batch of `batch` frames.
    public static func weightedEnergyGradient(_ potential: any Potential, frames: [Structure], coefficients: [Double], names: [String], batch: Int = 8) -> [String: Tensor] {
        precondition(coefficients.count == frames.count, "one coefficient per frame")
        var acc: [String: Tensor] = [:]
        for n in names { acc[n] = Tensor.zeros(potential.parameters[n]!.shape) }
        var start = 0
        while start < frames.count {
            let end = Swift.min(start + batch, frames.count)
            let chunk = Array(frames[start..<end])
            let tape = Tape()
            let (e, leaves) = batchedEnergies(potential, chunk, names: names, tape: tape)
            let g = tape.vjp(of: [e], seeds: [Variable(constant: Tensor(Array(coefficients[start..<end])))], wrt: leaves)
            for (k, n) in names.enumerated() { acc[n] = acc[n]! + g[k].value }
            start = end
        }
        return acc
    }

    /// Energies [S] of the frames batched into one graph, with the parameters `names` as leaves on `tape`.
    static func batchedEnergies(_ potential: any Potential, _ frames: [Structure], names: [String], tape: Tape) -> (Variable, [Variable]) {
        let sys = AtomicSystem(structures: frames, lists: frames.map { NeighborList.build($0, cutoff: potential.cutoff) })
        var params: [String: Variable] = [:]
        var leaves: [Variable] = []
        for (k, v) in potential.parameters {
            if names.contains(k) {
                let l = tape.variable(v)
                params[k] = l
            } else {
                params[k] = Variable(constant: v)
            }
        }
        for n in names { leaves.append(params[n]!) }
        let x = Variable(constant: Tensor.concatenate(frames.map(\.positions), axis: 0))
        let cells = Variable(constant: Tensor.concatenate(frames.map { $0.cell.reshaped([1, 3, 3]) }, axis: 0))
        return (potential.energies(sys, positions: x, cells: cells, parameters: params), leaves)
    }
}
