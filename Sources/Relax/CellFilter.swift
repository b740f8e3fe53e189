import Foundation
import Tape

/// Positions and cell relaxed together, as ASE's `FrechetCellFilter` (ase.filters, 3.29): the optimizer sees
/// N + 3 rows of generalised coordinates — positions in the undeformed cell, x·F⁻ᵀ, and exp_cell_factor ·
/// log(N·F) for the deformation gradient F = (C₀⁻¹C)ᵀ — and the matching generalised forces: F·f for atoms
/// and, for the cell, the Fréchet derivative of exp contracted with the virial (consistent with the energy,
/// Ortner's JuLIP construction). `pressure` (eV/Å³) adds the enthalpy term pV.
/// Values only: cell relaxation is not recorded on the tape.
public struct FrechetCellFilter: Sendable {
    public let originalCell: Tensor
    public let atomCount: Int
    public let expCellFactor: Double
    public let pressure: Double

    public init(cell: Tensor, atomCount: Int, pressure: Double = 0, expCellFactor: Double? = nil) {
        originalCell = cell
        self.atomCount = atomCount
        self.pressure = pressure
        self.expCellFactor = expCellFactor ?? Double(atomCount)
    }

    private var cellFactor: Double { Double(atomCount) }

    /// F = (C₀⁻¹ C)ᵀ, row-major 3×3.
    func deformationGradient(_ cell: Tensor) -> [Double] {
        let c0inv = originalCell.inverse3x3()!
        return MatrixFunctions.transpose(Tensor.matmul(c0inv, cell).array, 3)
    }

    public func generalized(positions: Tensor, cell: Tensor) -> Tensor {
        let f = deformationGradient(cell)
        let finvT = MatrixFunctions.transpose(MatrixFunctions.inverse(f, 3)!, 3)
        let x = Tensor.matmul(positions, Tensor(shape: [3, 3], finvT))
        let logNF = MatrixFunctions.log(f.map { $0 * cellFactor }, 3).map { $0 * expCellFactor }
        return Tensor.concatenate([x, Tensor(shape: [3, 3], logNF)], axis: 0)
    }

    public func atoms(from g: Tensor) -> (positions: Tensor, cell: Tensor) {
        let n = atomCount
        let logPart = g.slice(axis: 0, n..<(n + 3)).array.map { $0 / expCellFactor }
        let f = MatrixFunctions.exp(logPart, 3).map { $0 / cellFactor }
        let fT = Tensor(shape: [3, 3], MatrixFunctions.transpose(f, 3))
        return (Tensor.matmul(g.slice(axis: 0, 0..<n), fT), Tensor.matmul(originalCell, fT))
    }

    /// Generalised forces [N + 3, 3] from atomic forces, stress (3×3, ASE sign) and the current cell.
    public func generalizedForces(forces: Tensor, stress: Tensor, cell: Tensor) -> Tensor {
        let volume = Swift.abs(cell.determinant3x3)
        var virial = (stress + Tensor.identity(3) * pressure) * (-volume)
        virial = virial.reshaped([3, 3])
        let f = deformationGradient(cell)
        let logF = MatrixFunctions.log(f, 3)
        let ucf = Tensor.matmul(virial, Tensor(shape: [3, 3], MatrixFunctions.inverse(MatrixFunctions.transpose(f, 3), 3)!)).array
        var cellForce = [Double](repeating: 0, count: 9)
        for mu in 0..<3 { for nu in 0..<3 {
            var dir = [Double](repeating: 0, count: 9)
            dir[mu * 3 + nu] = 1
            let d = MatrixFunctions.expFrechet(logF, dir, 3)
            cellForce[mu * 3 + nu] = zip(d, ucf).reduce(0) { $0 + $1.0 * $1.1 } / expCellFactor
        } }
        let atomForces = Tensor.matmul(forces, Tensor(shape: [3, 3], f))
        return Tensor.concatenate([atomForces, Tensor(shape: [3, 3], cellForce)], axis: 0)
    }
}
