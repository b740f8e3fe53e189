import Foundation
import Tape

// Neural-network operations for ported models, as tape operations with fused forward kernels. When the backward
// pass is recorded (second derivatives), each backward rule is rebuilt from differentiable primitives, so the
// result can be differentiated again; otherwise a fused kernel computes it from values saved in the forward.

extension Variable {
    /// torch.nn.LayerNorm over the last axis: (x − mean)/√(var + eps)·w + b with the biased variance.
    func layerNorm(weight: Variable, bias: Variable, eps: Double = 1e-5) -> Variable {
        let d = shape[rank - 1], rows = count / Swift.max(d, 1)
        precondition(weight.shape == [d] && bias.shape == [d], "layerNorm: weight and bias must have shape [\(d)]")
        var y = Tensor.zeros(shape), xhat = Tensor.zeros(shape), rstd = Tensor.zeros([rows])
        value.withUnsafeBufferPointer { x in
            weight.value.withUnsafeBufferPointer { w in
                bias.value.withUnsafeBufferPointer { b in
                    y.withUnsafeMutableBufferPointer { yp in
                        xhat.withUnsafeMutableBufferPointer { hp in
                            rstd.withUnsafeMutableBufferPointer { rp in
                                for r in 0..<rows {
                                    let o = r * d
                                    var mean = 0.0
                                    for k in 0..<d { mean += x[o + k] }
                                    mean /= Double(d)
                                    var v = 0.0
                                    for k in 0..<d { let c = x[o + k] - mean; v += c * c }
                                    let s = 1 / (v / Double(d) + eps).squareRoot()
                                    rp[r] = s
                                    for k in 0..<d {
                                        let h = (x[o + k] - mean) * s
                                        hp[o + k] = h
                                        yp[o + k] = h * w[k] + b[k]
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let xhatSaved = xhat, rstdSaved = rstd
        return makeOp("layerNorm", [self, weight, bias], y) { c in
            let g = c.grad
            if c.tape.isRecording {
                let x = c.input(0), w = c.input(1)
                let xc = x - x.mean(axes: [-1], keepDims: true)
                let s = 1.0 / ((xc.squared().mean(axes: [-1], keepDims: true)) + eps).sqrt()
                let h = xc * s
                let gh = g * w
                let gx = s * (gh - gh.mean(axes: [-1], keepDims: true) - h * (gh * h).mean(axes: [-1], keepDims: true))
                return [c.needs[0] ? gx : nil, c.needs[1] ? (g * h).sum(toShape: [d]) : nil, c.needs[2] ? g.sum(toShape: [d]) : nil]
            }
            var gx = Tensor.zeros(xhatSaved.shape), gw = Tensor.zeros([d]), gb = Tensor.zeros([d])
            g.value.withUnsafeBufferPointer { gp in
                xhatSaved.withUnsafeBufferPointer { hp in
                    rstdSaved.withUnsafeBufferPointer { rp in
                        c.input(1).value.withUnsafeBufferPointer { w in
                            gx.withUnsafeMutableBufferPointer { gxp in
                                gw.withUnsafeMutableBufferPointer { gwp in
                                    gb.withUnsafeMutableBufferPointer { gbp in
                                        for r in 0..<rows {
                                            let o = r * d
                                            var m1 = 0.0, m2 = 0.0
                                            for k in 0..<d {
                                                let gh = gp[o + k] * w[k]
                                                m1 += gh
                                                m2 += gh * hp[o + k]
                                                gwp[k] += gp[o + k] * hp[o + k]
                                                gbp[k] += gp[o + k]
                                            }
                                            m1 /= Double(d)
                                            m2 /= Double(d)
                                            let s = rp[r]
                                            for k in 0..<d { gxp[o + k] = s * (gp[o + k] * w[k] - m1 - hp[o + k] * m2) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            return [c.needs[0] ? Variable(constant: gx) : nil, c.needs[1] ? Variable(constant: gw) : nil, c.needs[2] ? Variable(constant: gb) : nil]
        }
    }

    /// arccos, for |x| < 1; d/dx = −1/√(1 − x²).
    func acos() -> Variable {
        makeOp("acos", [self], value.map(Foundation.acos)) { c in
            let x = c.input(0)
            return [-(c.grad / (1 - x * x).sqrt())]
        }
    }

    /// torch.nn.Linear: x·Wᵀ + b, with W of shape [out, in].
    func linear(_ weight: Variable, _ bias: Variable?) -> Variable {
        let y = matmul(self, weight, transposeB: true)
        guard let b = bias else { return y }
        return y + b
    }
}
