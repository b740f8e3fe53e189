import Foundation

// Transcendental functions written as straight-line arithmetic, inlined into the activation kernels: the C
// library's are calls that no loop can vectorise (libm's exp took a sixth of CHGNet's time, exp and log1p a
// quarter of SchNet's energy+forces).

/// eˣ for the activations: x clamped to [−708, 709], x = k·ln 2 + r with |r| ≤ ln 2/2, e^r by its Taylor series
/// to degree 13 (truncation < 10⁻¹⁷ relative), 2^k assembled from bits. Within 2 ulp of libm's exp, inlined and
/// branch-free (libm's exp took a sixth of CHGNet's time).
@inline(__always)
func fastExp(_ x: Double) -> Double {
    let xc = Swift.min(Swift.max(x, -708.0), 709.0)
    // Adding 1.5·2⁵² rounds x/ln 2 to an integer k held in the low bits of the sum.
    let magic = 6755399441055744.0
    let t = xc * 1.4426950408889634 + magic
    let k = t - magic
    // ln 2 in two parts (Cody–Waite): k·ln2hi is exact for |k| < 2²¹.
    let r = (xc - k * 0.6931471803691238) - k * 1.9082149292705877e-10
    var p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    let scale = Double(bitPattern: (t.bitPattern &- magic.bitPattern &+ 1023) << 52)
    return p * scale
}

/// 1/(1 + e⁻ˣ), evaluated as e/(1 + e) with e = e^−|x| for negative x, so that it never overflows.
@inline(__always)
func fastSigmoid(_ x: Double) -> Double {
    let e = fastExp(-Swift.abs(x))
    return x >= 0 ? 1 / (1 + e) : e / (1 + e)
}

/// log(1 + e) for e in [0, 1]: u = 1 + e rounded, log u from m = u or u/2 in [√½, √2] as 2·atanh(s),
/// s = (m − 1)/(m + 1), |s| ≤ 0.172, by its series to s²³ (truncation < 1e-18 relative), plus the rounding error of
/// 1 + e divided by u (Goldberg, "What every computer scientist should know about floating-point arithmetic", ACM
/// Computing Surveys 23(1), 1991, Theorem 4). Within 2 ulp of libm's log1p (FastMathTests).
@inline(__always)
func fastLog1pOfUnit(_ e: Double) -> Double {
    let u = 1 + e
    let correction = (e - (u - 1)) / u
    let big = u > 1.4142135623730951
    let m = big ? u * 0.5 : u
    let f = m - 1
    let s = f / (2 + f)
    let z = s * s
    var p = 1.0 / 23
    p = p * z + 1.0 / 21
    p = p * z + 1.0 / 19
    p = p * z + 1.0 / 17
    p = p * z + 1.0 / 15
    p = p * z + 1.0 / 13
    p = p * z + 1.0 / 11
    p = p * z + 1.0 / 9
    p = p * z + 1.0 / 7
    p = p * z + 1.0 / 5
    p = p * z + 1.0 / 3
    // log m = 2s + 2s·z·p: the leading term kept apart so that its rounding stays half an ulp.
    let logM = 2 * s + (2 * s) * (z * p)
    // ln 2 in two parts (Cody and Waite, "Software Manual for the Elementary Functions", Prentice-Hall 1980).
    return big ? (0.6931471803691238 + (logM + 1.9082149292705877e-10)) + correction : logM + correction
}

/// Softplus log(1 + eˣ) − shift and σ(x) over `n` elements, both from one e^{−|x|} (σ with `fastSigmoid`'s bits).
func softplusAndSigmoid(_ x: UnsafePointer<Double>, _ value: UnsafeMutablePointer<Double>,
                        _ sigmoid: UnsafeMutablePointer<Double>, count n: Int, minus shift: Double) {
    for i in 0..<n {
        let xi = x[i], e = fastExp(-Swift.abs(xi))
        value[i] = (Swift.max(xi, 0) + fastLog1pOfUnit(e)) - shift
        sigmoid[i] = (xi >= 0 ? 1 : e) / (1 + e)
    }
}

/// x·σ(x) and σ(x) over `n` elements.
func siluAndSigmoid(_ x: UnsafePointer<Double>, _ value: UnsafeMutablePointer<Double>,
                    _ sigmoid: UnsafeMutablePointer<Double>, count n: Int) {
    for i in 0..<n {
        let s = fastSigmoid(x[i])
        sigmoid[i] = s
        value[i] = x[i] * s
    }
}

/// eˣ in single precision, as `fastExp`: x clamped to [−87, 88] (2^k stays normal), x = k·ln 2 + r with
/// |r| ≤ ln 2/2, e^r by its Taylor series to degree 7 (truncation < 10⁻⁸ relative, below Float's half ulp).
@inline(__always)
func fastExpFloat(_ x: Float) -> Float {
    let xc = Swift.min(Swift.max(x, -87), 88)
    // Adding 1.5·2²³ rounds x/ln 2 to an integer k held in the low bits of the sum.
    let magic: Float = 12582912
    let t = xc * 1.44269504 + magic
    let k = t - magic
    // ln 2 in two parts (Cody–Waite): k·ln2hi is exact (ln2hi has 15 significant bits, |k| ≤ 127).
    let r = (xc - k * 0.693145752) - k * 1.4286068203e-6
    var p: Float = 1.0 / 5040
    p = p * r + 1.0 / 720
    p = p * r + 1.0 / 120
    p = p * r + 1.0 / 24
    p = p * r + 1.0 / 6
    p = p * r + 0.5
    p = p * r + 1
    p = p * r + 1
    let scale = Float(bitPattern: (t.bitPattern &- magic.bitPattern &+ 127) << 23)
    return p * scale
}

/// x·σ(x) and σ(x) over `n` Floats (σ as `fastSigmoid`, from e^−|x|).
func siluAndSigmoid(_ x: UnsafePointer<Float>, _ value: UnsafeMutablePointer<Float>,
                    _ sigmoid: UnsafeMutablePointer<Float>, count n: Int) {
    for i in 0..<n {
        let xi = x[i], e = fastExpFloat(-Swift.abs(xi))
        let s = xi >= 0 ? 1 / (1 + e) : e / (1 + e)
        sigmoid[i] = s
        value[i] = xi * s
    }
}

/// log(1 + e) for e in [0, 1] in single precision, as `fastLog1pOfUnit` with the series of atanh to s⁹
/// (truncation < 10⁻⁹ relative for |s| ≤ 0.172).
@inline(__always)
func fastLog1pOfUnitFloat(_ e: Float) -> Float {
    let u = 1 + e
    let correction = (e - (u - 1)) / u
    let big = u > 1.41421356
    let m = big ? u * 0.5 : u
    let f = m - 1
    let s = f / (2 + f)
    let z = s * s
    var p: Float = 1.0 / 9
    p = p * z + 1.0 / 7
    p = p * z + 1.0 / 5
    p = p * z + 1.0 / 3
    let logM = 2 * s + (2 * s) * (z * p)
    return big ? (0.693145752 + (logM + 1.4286068203e-6)) + correction : logM + correction
}

/// Softplus log(1 + eˣ) − shift and σ(x) over `n` Floats, both from one e^{−|x|}.
func softplusAndSigmoid(_ x: UnsafePointer<Float>, _ value: UnsafeMutablePointer<Float>,
                        _ sigmoid: UnsafeMutablePointer<Float>, count n: Int, minus shift: Float) {
    for i in 0..<n {
        let xi = x[i], e = fastExpFloat(-Swift.abs(xi))
        value[i] = (Swift.max(xi, 0) + fastLog1pOfUnitFloat(e)) - shift
        sigmoid[i] = (xi >= 0 ? 1 : e) / (1 + e)
    }
}
