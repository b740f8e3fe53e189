import Foundation

/// Real Wigner-3j symbols (coupling coefficients of real spherical harmonics) in e3nn's convention, computed in
/// Double.
///
/// C^{l1 l2 l3} is the invariant tensor of D^{l1} ⊗ D^{l2} ⊗ D^{l3} in the real basis of e3nn
/// (M. Geiger, T. Smidt, "e3nn: Euclidean neural networks", arXiv:2207.09453, 2022): the complex Clebsch–Gordan
/// coefficients ⟨l1 m1; l2 m2 | l3 m3⟩ (Condon–Shortley phase, from Racah's closed formula: G. Racah,
/// Phys. Rev. 62, 438 (1942)), transformed to real harmonics with the matrices Q_l of the real-form
/// relations Y_{l,m} = (Y^m ± Y^{−m})/√2 times the phase (−i)^l that makes the result real, and normalised to unit
/// Frobenius norm. The sign therefore follows from these definitions (checked against e3nn 0.6.0's `wigner_3j`).
public enum Wigner3j {
    /// C[(i·(2l2+1) + j)·(2l3+1) + k] for real components i, j, k (m = −l…l), or nil when the triangle
    /// condition |l1 − l2| ≤ l3 ≤ l1 + l2 fails.
    public static func symbol(_ l1: Int, _ l2: Int, _ l3: Int) -> [Double]? {
        guard l1 >= 0, l2 >= 0, l3 >= 0, abs(l1 - l2) <= l3, l3 <= l1 + l2 else { return nil }
        let d1 = 2 * l1 + 1, d2 = 2 * l2 + 1, d3 = 2 * l3 + 1
        let q1 = realToComplex(l1), q2 = realToComplex(l2), q3 = realToComplex(l3)
        // C[j, l, m] = Σ_{a,b,c} Q1[a, j]·Q2[b, l]·conj(Q3[c, m])·CG[a, b, c], with CG indexed by m + l.
        var re = [Double](repeating: 0, count: d1 * d2 * d3), im = re
        for a in 0..<d1 {
            for b in 0..<d2 {
                let m3 = (a - l1) + (b - l2)
                guard abs(m3) <= l3 else { continue }
                let c = m3 + l3
                let cg = clebschGordan(l1, a - l1, l2, b - l2, l3, m3)
                guard cg != 0 else { continue }
                for j in 0..<d1 {
                    let x = q1[a * d1 + j]
                    guard x != .zero else { continue }
                    for l in 0..<d2 {
                        let y = q2[b * d2 + l]
                        guard y != .zero else { continue }
                        let xy = x * y
                        for m in 0..<d3 {
                            let z = q3[c * d3 + m].conjugate
                            guard z != .zero else { continue }
                            let v = xy * z
                            let o = (j * d2 + l) * d3 + m
                            re[o] += cg * v.re
                            im[o] += cg * v.im
                        }
                    }
                }
            }
        }
        let norm = re.reduce(0) { $0 + $1 * $1 }.squareRoot()
        precondition(im.allSatisfy { abs($0) <= 1e-12 * norm }, "Wigner3j(\(l1), \(l2), \(l3)): the real-basis coefficients are not real")
        return re.map { $0 / norm }
    }

    /// ⟨l1 m1; l2 m2 | l3 m3⟩ by Racah's formula (integer angular momenta).
    static func clebschGordan(_ j1: Int, _ m1: Int, _ j2: Int, _ m2: Int, _ j3: Int, _ m3: Int) -> Double {
        guard m3 == m1 + m2, abs(m1) <= j1, abs(m2) <= j2, abs(m3) <= j3 else { return 0 }
        func f(_ n: Int) -> Double { n <= 1 ? 1 : (2...n).reduce(1.0) { $0 * Double($1) } }
        let pre = Double(2 * j3 + 1) * f(j3 + j1 - j2) * f(j3 - j1 + j2) * f(j1 + j2 - j3) * f(j3 + m3) * f(j3 - m3)
            / (f(j1 + j2 + j3 + 1) * f(j1 - m1) * f(j1 + m1) * f(j2 - m2) * f(j2 + m2))
        let vmin = max(-j1 + j2 + m3, -j1 + m1, 0), vmax = min(j2 + j3 + m1, j3 - j1 + j2, j3 + m3)
        guard vmin <= vmax else { return 0 }
        var s = 0.0
        for v in vmin...vmax {
            let sign: Double = (v + j2 + m2) % 2 == 0 ? 1 : -1
            s += sign * f(j2 + j3 + m1 - v) * f(j1 - m1 + v) / (f(v) * f(j3 - j1 + j2 - v) * f(j3 + m3 - v) * f(v + j1 - j2 - m3))
        }
        return pre.squareRoot() * s
    }

    /// Q_l[(row)·(2l+1) + column], rows by the real index m + l, e3nn's real → complex change of basis:
    /// for m < 0 row m holds 1/√2 at column |m| and −i/√2 at −|m|; row 0 holds 1; for m > 0 (−1)^m/√2 at m and
    /// i(−1)^m/√2 at −m (columns by m + l); all times (−i)^l.
    static func realToComplex(_ l: Int) -> [Complex] {
        let d = 2 * l + 1
        var q = [Complex](repeating: .zero, count: d * d)
        let h = 1 / 2.0.squareRoot()
        for m in -l...l {
            let r = l + m
            if m < 0 {
                q[r * d + l - m] = Complex(h, 0)
                q[r * d + l + m] = Complex(0, -h)
            } else if m == 0 {
                q[r * d + l] = Complex(1, 0)
            } else {
                let s: Double = m % 2 == 0 ? 1 : -1
                q[r * d + l + m] = Complex(s * h, 0)
                q[r * d + l - m] = Complex(0, s * h)
            }
        }
        // (−i)^l
        let phase = [Complex(1, 0), Complex(0, -1), Complex(-1, 0), Complex(0, 1)][l % 4]
        return q.map { $0 * phase }
    }

    struct Complex: Equatable {
        var re: Double, im: Double
        init(_ re: Double, _ im: Double) { self.re = re; self.im = im }
        static let zero = Complex(0, 0)
        var conjugate: Complex { Complex(re, -im) }
        static func * (a: Complex, b: Complex) -> Complex { Complex(a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re) }
    }
}
