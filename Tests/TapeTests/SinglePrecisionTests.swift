import Foundation
import Testing
@testable import Tape

/// Values exactly representable in single precision, so that a float32 kernel and the float64 one start from the
/// same numbers and differ only by their own rounding.
private func floatExact(_ shape: [Int], seed: UInt64, scale: Double = 1) -> Tensor {
    var rng = SeededGenerator(seed: seed)
    let n = Tensor.elementCount(shape)
    return Tensor(shape: shape, (0..<n).map { _ in Double(Float(scale * rng.normal())) })
}

/// max |a − b| / max |b| (a may be of either precision).
private func relativeError(_ a: Tensor, _ b: Tensor) -> Double {
    a.maxAbsDifference(b) / Swift.max(b.maxAbs, .leastNormalMagnitude)
}

@Suite("Single precision: kernels, casts and second derivatives against float64")
struct SinglePrecisionTests {
    @Test func conversionsRoundToNearestAndKeepTheKind() {
        let x = Tensor(shape: [2, 3], [1, 1.0 / 3, -2.5e-8, 1e30, -0.1, 7])
        let f = x.converted(to: .float32)
        #expect(f.kind == .float32 && x.kind == .float64)
        #expect(f.array == x.array.map { Double(Float($0)) })
        #expect(f.reshaped([3, 2]).kind == .float32)
        // Widening is exact, so a round trip is the rounding itself.
        #expect(f.converted(to: .float64).array == f.array)
        #expect(f.converted(to: .float32).bitwiseEqual(f))
        #expect(Tensor.zeros([4], kind: .float32).kind == .float32)
        #expect(Tensor(shape: [2], float32: [1.5, -2]).array == [1.5, -2])
    }

    @Test func dataMovementIsExact() {
        let x = floatExact([5, 4], seed: 1), f = x.converted(to: .float32)
        let index = [4, 0, 0, 3, 1, 2, 4]
        let pairs: [(Tensor, Tensor)] = [
            (f.transposed(), x.transposed()),
            (f.permuted([1, 0]), x.permuted([1, 0])),
            (f.gatherRows(index), x.gatherRows(index)),
            (f.slice(axis: 1, 1..<3), x.slice(axis: 1, 1..<3)),
            (Tensor.concatenate([f, f.slice(axis: 0, 0..<2)], axis: 0), Tensor.concatenate([x, x.slice(axis: 0, 0..<2)], axis: 0)),
            (f.slice(axis: 0, 1..<2).broadcast(to: [3, 4]), x.slice(axis: 0, 1..<2).broadcast(to: [3, 4])),
            (f.repeatColumnGroups(ColumnGroups(sizes: [1, 3, 2, 2])), x.repeatColumnGroups(ColumnGroups(sizes: [1, 3, 2, 2]))),
        ]
        for (single, double) in pairs {
            #expect(single.kind == .float32)
            #expect(single.array == double.array)
        }
    }

    @Test func arithmeticAndProductsAgreeToSinglePrecision() {
        // Products on every path of `matmul`: plain loops, gemv, row blocks, the transposed-weights copy and the
        // chunked long inner dimension.
        let shapes: [(Int, Int, Int, Bool, Bool)] = [(3, 4, 5, false, false), (300, 64, 1, false, false), (1, 64, 300, false, false),
                                                    (700, 64, 64, false, false), (700, 48, 64, false, true), (64, 3000, 32, true, false)]
        for (i, (m, k, n, ta, tb)) in shapes.enumerated() {
            let a = floatExact(ta ? [k, m] : [m, k], seed: UInt64(10 + i)), b = floatExact(tb ? [n, k] : [k, n], seed: UInt64(20 + i))
            let single = Tensor.matmul(a.converted(to: .float32), b.converted(to: .float32), transposeA: ta, transposeB: tb)
            let double = Tensor.matmul(a, b, transposeA: ta, transposeB: tb)
            #expect(single.kind == .float32)
            // Each element sums k products of unit-size terms: rounding grows like √k ulp of the largest partial sum.
            #expect(relativeError(single, double) < 2e-6 * Double(k).squareRoot(), "matmul \(m)×\(k)×\(n)")
        }
        let x = floatExact([50, 8], seed: 3), bias = floatExact([8], seed: 4), column = floatExact([50, 1], seed: 5)
        let xf = x.converted(to: .float32), bf = bias.converted(to: .float32), cf = column.converted(to: .float32)
        let checks: [(Tensor, Tensor)] = [
            (xf + bf, x + bias), (xf * cf, x * column), (xf / (bf * bf + 1), x / (bias * bias + 1)), (xf * 0.3 - 2, x * 0.3 - 2),
            (xf.sum(toShape: [8]), x.sum(toShape: [8])), (xf.sum(toShape: [50, 1]), x.sum(toShape: [50, 1])),
            (xf.scatterAddRows((0..<50).map { $0 % 7 }, count: 7), x.scatterAddRows((0..<50).map { $0 % 7 }, count: 7)),
            (xf.sumColumnGroups(ColumnGroups(sizes: [3, 5])), x.sumColumnGroups(ColumnGroups(sizes: [3, 5]))),
        ]
        for (single, double) in checks {
            #expect(single.kind == .float32)
            #expect(relativeError(single, double) < 1e-6)
        }
        #expect(Swift.abs(xf.sum() - x.sum()) < 1e-6 * x.maxAbs * 400)
        #expect(Swift.abs(xf.dot(xf) - x.dot(x)) < 1e-6 * x.dot(x))
    }

    @Test func singleExpAndSiluWithinTwoUlp() {
        var worst = 0.0
        // Over the clamped range [−87, 88], against libm's exp in double precision.
        var x: Float = -87
        while x <= 88 {
            let exact = Foundation.exp(Double(x)), got = Double(fastExpFloat(x))
            worst = Swift.max(worst, Swift.abs(got - exact) / Double(Float(exact).ulp))
            x += 0.0137
        }
        #expect(worst <= 2, "fastExpFloat is \(worst) ulp off")
        #expect(fastExpFloat(-1000) > 0 && fastExpFloat(1000).isFinite)
        let v = floatExact([1000], seed: 6, scale: 8)
        let tape = Tape()
        let single = tape.variable(v.converted(to: .float32)).silu().value, double = tape.variable(v).silu().value
        #expect(single.kind == .float32)
        #expect(relativeError(single, double) < 3e-7)
    }

    /// A small neural energy of positions run in single precision between two casts, as a mixed-precision potential
    /// would: the energy, the forces and the gradient of a force loss with respect to the weights (a second
    /// derivative: what BPTT through a relaxation needs) against the same computation in float64.
    @Test func mixedPrecisionForcesAndSecondDerivativesAgreeWithDouble() {
        let positions = floatExact([12, 3], seed: 7), w1 = floatExact([3, 32], seed: 8, scale: 0.5)
        let b1 = floatExact([32], seed: 9, scale: 0.1), w2 = floatExact([32, 16], seed: 10, scale: 0.3), w3 = floatExact([16, 1], seed: 11, scale: 0.3)
        func run(_ kind: ScalarKind) -> (energy: Double, forces: Tensor, grads: [Tensor]) {
            let tape = Tape()
            let x = tape.variable(positions)
            let params = [w1, b1, w2, w3].map { tape.variable($0) }
            let p = params.map { $0.cast(to: kind) }
            let h = (matmul(x.cast(to: kind), p[0]) + p[1]).silu()
            let energy = matmul(matmul(h, p[2]).silu(), p[3]).sum().cast(to: .float64)
            let forces = -tape.gradient(of: energy, wrt: [x], createGraph: true)[0]
            let loss = (forces * forces).sum()
            let grads = tape.gradient(of: loss, wrt: params)
            return (energy.scalar, forces.value, grads.map(\.value))
        }
        let single = run(.float32), double = run(.float64)
        #expect(single.forces.kind == .float64 && single.grads.allSatisfy { $0.kind == .float64 })
        #expect(Swift.abs(single.energy - double.energy) < 1e-6 * Swift.abs(double.energy))
        #expect(relativeError(single.forces, double.forces) < 1e-5)
        for (s, d) in zip(single.grads, double.grads) { #expect(relativeError(s, d) < 1e-4) }
        // And the float64 run is not trivially equal to the single-precision one (the test would not notice a cast that did nothing).
        #expect(single.forces.maxAbsDifference(double.forces) > 0)
    }
}
