import Foundation
import Tape

extension SphericalHarmonics {
    /// Real spherical harmonics of degrees 0…L (L ≤ 3) of unit vectors u [P, 3] in e3nn's convention
    /// (`e3nn.o3.spherical_harmonics(..., normalize=True, normalization='component')`): y is the polar axis and
    /// |Y^l|² = 2l + 1, so Y⁰ = 1, Y¹ = √3 (x, y, z), Y² = (√15 xz, √15 xy, √5 (y² − (x² + z²)/2), √15 yz,
    /// √15/2 (z² − x²)). Columns degree by degree, (L + 1)² in all.
    ///
    /// These are the orthonormal harmonics of `evaluate` (z polar, m = −l…l) times √(4π), evaluated at the
    /// cyclically permuted vector (z, x, y); the same polynomial table serves both conventions.
    public static func evaluateE3nn(_ u: Variable, maxDegree: Int) -> Variable {
        precondition((0...3).contains(maxDegree), "e3nn spherical harmonics are implemented for degrees 0…3, got \(maxDegree)")
        let p = u.shape[0]
        let one = Variable(constant: Tensor(shape: [p, 1], repeating: 1))
        guard maxDegree > 0 else { return one }
        var parts = [u]
        if maxDegree >= 2 {
            let u2 = outerRows(u, u).reshaped([p, 9])
            parts.append(u2)
            if maxDegree >= 3 { parts.append(outerRows(u2, u).reshaped([p, 27])) }
        }
        let y = matmul(Variable.concatenate(parts, axis: 1), Variable(constant: e3nnCoefficientMatrix(maxDegree: maxDegree)))
        return Variable.concatenate([one, y], axis: 1)
    }

    /// The coefficient matrix of `evaluate` with every monomial's axes renamed x → z, y → x, z → y and every
    /// coefficient times √(4π).
    static func e3nnCoefficientMatrix(maxDegree: Int) -> Tensor {
        let monomials = [3, 12, 39][maxDegree - 1]
        let m = componentCount(maxDegree: maxDegree)
        var c = Tensor.zeros([monomials, m])
        let axis = [2, 0, 1], scale = (4 * Double.pi).squareRoot()
        for (col, poly) in terms(maxDegree: maxDegree).enumerated() {
            for (coef, axes) in poly {
                let a = axes.map { axis[$0] }
                let row: Int
                switch a.count {
                case 1: row = a[0]
                case 2: row = 3 + a[0] * 3 + a[1]
                default: row = 12 + (a[0] * 3 + a[1]) * 3 + a[2]
                }
                c[row, col] += coef * scale
            }
        }
        return c
    }
}
