import Foundation
import Tape

/// e3nn-style layers on per-degree node features: one tensor per degree l, [nodes, (2l+1)·C_l], component-major
/// within a row (C_l channels of m = −l, then of m = −l+1, …; `EdgeTensorProduct` uses the same layout), nil where a
/// degree has no channels. Parity is not tracked (all features even, as in SevenNet-0).
public enum E3nn {
    /// e3nn's `normalize2mom(silu)` constant, 1/√E[silu(z)²] for z ~ N(0, 1), which e3nn estimates from 10⁶
    /// samples of torch's generator with seed 0: the trained weights were fitted with that estimate, so it is used
    /// as e3nn 0.6.0 prints it, not recomputed.
    public static let siluSecondMomentNormalisation = 1.6791767923989418

    /// SiLU normalised to unit second moment (e3nn `normalize2mom(silu)`).
    public static func normalizedSiLU(_ x: Variable) -> Variable { x.silu() * siluSecondMomentNormalisation }

    /// e3nn `o3.Linear` without bias: for every degree present on both sides, the [C_in, C_out] block of the flat
    /// `weight` (blocks in degree order, each row-major, as e3nn stores them), divided by √C_in (e3nn's
    /// path normalisation with one input block per degree), applied to the [nodes·(2l+1), C_in] view. Degrees
    /// without an input give nil.
    public static func linear(_ x: [Variable?], from cin: [Int], to cout: [Int], weight: Variable, nodes n: Int) -> [Variable?] {
        var out = [Variable?](repeating: nil, count: cout.count)
        var offset = 0
        for l in 0..<Swift.min(cin.count, cout.count) where cin[l] > 0 && cout[l] > 0 {
            let size = cin[l] * cout[l], d = 2 * l + 1
            let block = weight.slice(axis: 0, offset..<(offset + size)).reshaped([cin[l], cout[l]]) * (1 / Double(cin[l]).squareRoot())
            offset += size
            guard let xl = x[l] else { continue }
            out[l] = matmul(xl.reshaped([n * d, cin[l]]), block).reshaped([n, d * cout[l]])
        }
        precondition(offset == weight.count, "E3nn.linear: weight has \(weight.count) values, the degrees need \(offset)")
        return out
    }

    /// The number of channels entering `gate` for features `output`: the output scalars, then one gate scalar per
    /// channel of each degree l > 0, in the degree-0 block; the gated degrees as they are.
    public static func gateInput(_ output: [Int]) -> [Int] {
        var g = output
        g[0] = output[0] + output.dropFirst().reduce(0, +)
        return g
    }

    /// e3nn `nn.Gate`: φ of the first output[0] scalars; the following scalars, through φ, scale the channels of
    /// each degree l > 0 in order (one gate per channel, the same for all 2l+1 components).
    public static func gate(_ y: [Variable?], output: [Int], nodes n: Int, activation phi: (Variable) -> Variable) -> [Variable?] {
        let y0 = y[0]!, s = output[0]
        var out = [Variable?](repeating: nil, count: output.count)
        out[0] = phi(y0.slice(axis: 1, 0..<s))
        guard output.count > 1 else { return out }
        let gates = phi(y0.slice(axis: 1, s..<gateInput(output)[0]))
        var g = 0
        for l in 1..<output.count where output[l] > 0 {
            let c = output[l], d = 2 * l + 1
            let gl = gates.slice(axis: 1, g..<(g + c)).reshaped([n, 1, c])
            g += c
            if let yl = y[l] { out[l] = (yl.reshaped([n, d, c]) * gl).reshaped([n, d * c]) }
        }
        return out
    }

    /// e3nn `nn.FullyConnectedNet` without biases: x·W_k/√fan_in with φ between the layers, none after the last.
    public static func fullyConnected(_ x: Variable, weights: [Variable], activation phi: (Variable) -> Variable) -> Variable {
        var h = x
        for (k, wk) in weights.enumerated() {
            h = matmul(h, wk * (1 / Double(wk.shape[0]).squareRoot()))
            if k < weights.count - 1 { h = phi(h) }
        }
        return h
    }

    /// Bessel functions (2/r_c)·sin(c_n r)/r with (trainable) frequencies c_n, initially nπ/r_c (the radial basis of
    /// J. Gasteiger, J. Groß, S. Günnemann, ICLR 2020, as NequIP uses it): [pairs, n] for lengths [pairs, 1].
    public static func besselBasis(_ r: Variable, frequencies c: Variable, cutoff rc: Double) -> Variable {
        (r * c.reshaped([1, c.count])).sin() * (2 / rc) / r
    }

    /// The XPLOR switching function: 1 below r_on, (r_c² − r²)²(r_c² + 2r² − 3r_on²)/(r_c² − r_on²)³ from r_on to
    /// r_c (C¹ at both ends; A. T. Brünger, X-PLOR Version 3.1, Yale University Press, 1992). Lengths must be < r_c.
    public static func xplorCutoff(_ r: Variable, on: Double, cutoff rc: Double) -> Variable {
        let r2 = r.squared(), rc2 = rc * rc, on2 = on * on
        let d = rc2 - on2
        let switching = (rc2 - r2).squared() * (rc2 - 3 * on2 + r2 * 2) / (d * d * d)
        return select(r.value.map { $0 < on ? 1 : 0 }, Variable(constant: 1), switching)
    }
}
