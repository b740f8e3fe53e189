import Foundation
import Tape

/// Real spherical harmonics Y_lm(û) of degrees 1…L (L ≤ 3) on unit vectors, as Cartesian polynomials.
///
/// Normalisation: orthonormal on the unit sphere (∫ Y_lm Y_l'm' dΩ = δ_ll' δ_mm', so Y_00 would be 1/(2√π)),
/// m ordered −l…l within each degree, no Condon–Shortley phase; Y_1 = √(3/4π)·(y, z, x) as in mlff's
/// `spherical.py` (SO3krates, Frank et al. 2024 §Methods). Components are laid out degree by degree:
/// columns [l² − 1, (l+1)² − 1) hold degree l, Σ_l (2l+1) = L(L+2) columns in all.
///
/// On the tape the harmonics are one constant matrix applied to the monomials (u, u⊗u, u⊗u⊗u), so they are
/// differentiable to any order with a handful of nodes. The polynomials are homogeneous forms that agree
/// with the textbook ones on the sphere (r² = 1); their derivatives off the sphere differ only radially,
/// which u = r/|r| projects out.
public enum SphericalHarmonics {
    /// Number of components of degrees 1…maxDegree.
    public static func componentCount(maxDegree: Int) -> Int { maxDegree * (maxDegree + 2) }

    /// Degree of each component column.
    public static func degrees(maxDegree: Int) -> [Int] {
        (1...maxDegree).flatMap { l in Array(repeating: l, count: 2 * l + 1) }
    }

    /// Polynomial terms: (coefficient, monomial as axis indices 0 = x, 1 = y, 2 = z), per component.
    static func terms(maxDegree: Int) -> [[(Double, [Int])]] {
        let x = 0, y = 1, z = 2
        let pi = Double.pi
        var out: [[(Double, [Int])]] = []
        // l = 1
        let c1 = (3 / (4 * pi)).squareRoot()
        out += [[(c1, [y])], [(c1, [z])], [(c1, [x])]]
        if maxDegree >= 2 {
            let a = 0.5 * (15 / pi).squareRoot(), b = 0.25 * (5 / pi).squareRoot(), c = 0.25 * (15 / pi).squareRoot()
            out += [
                [(a, [x, y])],
                [(a, [y, z])],
                [(2 * b, [z, z]), (-b, [x, x]), (-b, [y, y])],
                [(a, [x, z])],
                [(c, [x, x]), (-c, [y, y])],
            ]
        }
        if maxDegree >= 3 {
            let a = 0.25 * (35 / (2 * pi)).squareRoot(), b = 0.5 * (105 / pi).squareRoot()
            let c = 0.25 * (21 / (2 * pi)).squareRoot(), d = 0.25 * (7 / pi).squareRoot(), e = 0.25 * (105 / pi).squareRoot()
            out += [
                [(3 * a, [x, x, y]), (-a, [y, y, y])],
                [(b, [x, y, z])],
                [(4 * c, [y, z, z]), (-c, [x, x, y]), (-c, [y, y, y])],
                [(2 * d, [z, z, z]), (-3 * d, [x, x, z]), (-3 * d, [y, y, z])],
                [(4 * c, [x, z, z]), (-c, [x, x, x]), (-c, [x, y, y])],
                [(e, [x, x, z]), (-e, [y, y, z])],
                [(a, [x, x, x]), (-3 * a, [x, y, y])],
            ]
        }
        return out
    }

    /// Coefficient matrix [3 + 9 + 27 (up to the degree), components] acting on the concatenated monomials.
    static func coefficientMatrix(maxDegree: Int) -> Tensor {
        let monomials = [3, 12, 39][maxDegree - 1]
        let m = componentCount(maxDegree: maxDegree)
        var c = Tensor.zeros([monomials, m])
        for (col, poly) in terms(maxDegree: maxDegree).enumerated() {
            for (coef, axes) in poly {
                let row: Int
                switch axes.count {
                case 1: row = axes[0]
                case 2: row = 3 + axes[0] * 3 + axes[1]
                default: row = 12 + (axes[0] * 3 + axes[1]) * 3 + axes[2]
                }
                c[row, col] += coef
            }
        }
        return c
    }

    /// Y [P, components] of unit vectors u [P, 3].
    public static func evaluate(_ u: Variable, maxDegree: Int) -> Variable {
        precondition((1...3).contains(maxDegree), "spherical harmonics are implemented for degrees 1…3, got \(maxDegree)")
        let p = u.shape[0]
        var parts = [u]
        if maxDegree >= 2 {
            let u2 = outerRows(u, u).reshaped([p, 9])
            parts.append(u2)
            if maxDegree >= 3 { parts.append(outerRows(u2, u).reshaped([p, 27])) }
        }
        return matmul(Variable.concatenate(parts, axis: 1), Variable(constant: coefficientMatrix(maxDegree: maxDegree)))
    }
}
