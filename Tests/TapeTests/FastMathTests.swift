import Foundation
import Testing
@testable import Tape

/// The inlined log1p and the softplus and SiLU loops against the C library (fastExp: NeuralOpTests).
@Suite("FastMath: log1p, softplus and SiLU against libm")
struct FastMathTests {
    static func ulps(_ a: Double, _ b: Double) -> UInt64 {
        let x = a.bitPattern, y = b.bitPattern
        return x > y ? x - y : y - x
    }

    @Test func log1pOnTheUnitIntervalWithinTwoUlp() {
        var rng = SeededGenerator(seed: 22)
        var worst: UInt64 = 0, differ = 0
        var es: [Double] = [0, 1, .leastNonzeroMagnitude, 1e-300, 1e-17, 2.2e-16, 0.5, Foundation.sqrt(2) - 1, Foundation.sqrt(2) - 1 + 1e-16, 0.999999999]
        for _ in 0..<200_000 { es.append(rng.uniform()) }
        for _ in 0..<100_000 { es.append(Foundation.pow(10, -300 * rng.uniform())) }
        for e in es {
            let u = Self.ulps(fastLog1pOfUnit(e), Foundation.log1p(e))
            worst = max(worst, u)
            if u > 0 { differ += 1 }
        }
        #expect(worst <= 2, "worst \(worst) ulp")
        #expect(differ > 0, "identical to libm everywhere: the test would not see a change")
        #expect(fastLog1pOfUnit(0) == 0)
    }

    /// Softplus, SiLU and their σ over the activations' range, and inputs beyond it (|x| > 708, where e^{−|x|} is
    /// clamped at e^{−708}: errors below 1e-300 absolute), ±∞ and NaN without a trap.
    @Test func softplusAndSiluLoops() {
        var rng = SeededGenerator(seed: 23)
        var xs: [Double] = [0, 1e-300, -1e-300, 36, -36, 707, -707.9, 708.5, -708.5, 1000, -1000]
        for _ in 0..<50_000 { xs.append(40 * (rng.uniform() - 0.5)) }
        let n = xs.count
        var sp = [Double](repeating: 0, count: n), spSig = sp, silu = sp, siluSig = sp
        softplusAndSigmoid(xs, &sp, &spSig, count: n, minus: 0.25)
        siluAndSigmoid(xs, &silu, &siluSig, count: n)
        for (i, x) in xs.enumerated() {
            let e = Foundation.exp(-Swift.abs(x)), s = x >= 0 ? 1 / (1 + e) : e / (1 + e)
            let softplus = (Swift.max(x, 0) + Foundation.log1p(e)) - 0.25
            #expect(Swift.abs(sp[i] - softplus) <= 4e-16 * Swift.max(Swift.abs(softplus), 1), "softplus(\(x))")
            #expect(Swift.abs(spSig[i] - s) <= 6e-16 * s + 1e-300, "σ(\(x))")
            #expect(spSig[i] == siluSig[i], "one σ for both, at \(x)")
            #expect(Swift.abs(silu[i] - x * s) <= 8e-16 * Swift.abs(x * s) + 1e-300, "silu(\(x))")
        }
        var v = [0.0, 0.0, 0.0], s = v
        softplusAndSigmoid([.nan, .infinity, -.infinity], &v, &s, count: 3, minus: 0)
        #expect(v[0].isNaN && s[0].isNaN && v[1] == .infinity && s[1] == 1 && v[2] < 1e-300 && s[2] < 1e-300)
        siluAndSigmoid([.nan, .infinity, -.infinity], &v, &s, count: 3)
        #expect(v[0].isNaN && s[0].isNaN && v[1] == .infinity && s[1] == 1 && s[2] < 1e-300)
    }
}
