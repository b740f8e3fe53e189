import Foundation
import Testing
import Tape
import Atoms
@testable import Potentials

@Suite("Potentials in single precision against float64")
struct SinglePrecisionPotentialTests {
    /// SchNet with its network in float32: energy, forces and the gradient of a force loss with respect to every
    /// parameter (a second derivative, as BPTT takes it) agree with the float64 model to single precision.
    @Test func schnetNetworkInFloat32AgreesWithFloat64() {
        guard var model = smallModels()[1].1 as? SchNet else { Issue.record("the second small model is not SchNet"); return }
        let s = randomSiCell()
        let sys = AtomicSystem(s, cutoff: model.cutoff)
        func run(_ m: SchNet) -> (energy: Double, forces: Tensor, grads: [Tensor]) {
            let tape = Tape()
            let x = tape.variable(s.positions)
            let params = m.parameterLeaves(on: tape)
            let (e, f) = m.energyAndForces(sys, positions: x, cells: Variable(constant: s.cell.reshaped([1, 3, 3])), parameters: params)
            let names = params.keys.sorted()
            let grads = tape.gradient(of: (f * f).sum(), wrt: names.map { params[$0]! })
            return (e.value.sum(), f.value, grads.map(\.value))
        }
        let double = run(model)
        model.precision = .float32
        let single = run(model)
        #expect(single.forces.kind == .float64 && single.grads.allSatisfy { $0.kind == .float64 })
        #expect(Swift.abs(single.energy - double.energy) < 1e-6 * Swift.abs(double.energy))
        #expect(relDiff(single.forces, double.forces) < 1e-5)
        #expect(single.forces.maxAbsDifference(double.forces) > 0, "the network did not run in float32")
        let g32 = Tensor(single.grads.flatMap(\.array)), g64 = Tensor(double.grads.flatMap(\.array))
        #expect(relDiff(g32, g64) < 1e-4)
        // The model's own evaluation (what relaxations call) takes the same path.
        #expect(relDiff(eval(model, s).forces, single.forces) < 1e-6)
    }
}
