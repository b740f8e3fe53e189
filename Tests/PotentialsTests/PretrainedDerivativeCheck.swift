import Atoms
import Foundation
import Testing
import Tape
@testable import Potentials

/// Energy of `s` (a 0.5 Å skin beyond the model's cutoff) as a function of positions and one named parameter.
func energyOf(_ model: any Potential, _ s: Structure, parameter name: String) -> ([Variable]) -> Variable {
    let sys = AtomicSystem(s, cutoff: model.cutoff + 0.5)
    let cells = Variable(constant: s.cell.reshaped([1, 3, 3]))
    return { v in
        var p = model.constantParameters
        p[name] = v[1]
        return model.energies(sys, positions: v[0], cells: cells, parameters: p).sum()
    }
}

/// For a pulled model: forces against central differences (h = 1e-5 Å), then ∂E/∂θ and the mixed ∂²E/∂x∂θ (the
/// derivative of the forces BPTT needs) for `draws` random weights among those the energy of `s` depends on,
/// against five-point differences in θ_k with h = 10⁻³·max(1, |θ_k|) (truncation ~h⁴, rounding ~10⁻¹¹).
func checkPretrainedDerivatives(_ model: any Potential, _ s: Structure, label: String, probe: String, forceTolerance: Double,
                                draws: Int = 4, seed: UInt64 = 11) {
    let f = GradCheck.firstOrder(energyOf(model, s, parameter: probe), at: [s.positions, model.parameters[probe]!], step: 1e-5)
    print("\(label) forces vs central differences (h = 1e-5 Å): \(f)")
    #expect(f.maxAbsoluteError < forceTolerance, "forces: \(f)")
    var rng = SeededGenerator(seed: seed)
    let all = AtomicSystem(s, cutoff: model.cutoff + 0.5)
    let tape0 = Tape()
    let leaves = model.parameterLeaves(on: tape0)
    let names = model.parameters.keys
    let grads = tape0.gradient(of: model.energies(all, positions: Variable(constant: s.positions), cells: Variable(constant: s.cell.reshaped([1, 3, 3])),
                                                  parameters: leaves).sum(), wrt: names.map { leaves[$0]! })
    var candidates: [(String, Int)] = []
    for (name, g) in zip(names, grads) { for k in 0..<g.count where abs(g.value[flat: k]) > 1e-6 { candidates.append((name, k)) } }
    for _ in 0..<draws {
        let (name, k) = candidates[rng.int(below: candidates.count)]
        let theta = model.parameters[name]!
        let e = energyOf(model, s, parameter: name)
        let tape = Tape()
        let x = tape.variable(s.positions), th = tape.variable(theta)
        let gx = tape.gradient(of: e([x, th]), wrt: [x, th], createGraph: true)
        let v = rng.normalTensor(s.positions.shape)
        // d/dθ_k of (v · ∂E/∂x), by the tape and by differences of the tape gradient in θ_k.
        let mixed = tape.gradient(of: (gx[0] * Variable(constant: v)).sum(), wrt: [th])[0].value[flat: k]
        let h = 1e-3 * max(1, abs(theta[flat: k]))
        func at(_ dt: Double) -> (Double, Double) {
            var t = theta
            t[flat: k] += dt
            let tp = Tape()
            let xx = tp.variable(s.positions), tt = tp.variable(t)
            let ee = e([xx, tt])
            return ((tp.gradient(of: ee, wrt: [xx])[0].value * v).sum(), ee.scalar)
        }
        let (f1, e1) = at(h), (f2, e2) = at(2 * h), (m1, n1) = at(-h), (m2, n2) = at(-2 * h)
        let dE = gx[1].value[flat: k], dEnum = (8 * (e1 - n1) - (e2 - n2)) / (12 * h)
        let mixedNum = (8 * (f1 - m1) - (f2 - m2)) / (12 * h)
        print("\(label) \(name)[\(k)]: ∂E/∂θ \(dE) vs \(dEnum); ∂(v·∂E/∂x)/∂θ \(mixed) vs \(mixedNum)")
        #expect(abs(dE - dEnum) <= 1e-6 * abs(dE) + 1e-10, "∂E/∂\(name)[\(k)]: \(dE) vs \(dEnum)")
        #expect(abs(mixed - mixedNum) <= 1e-6 * abs(mixed) + 1e-10, "∂²E/∂x∂\(name)[\(k)]: \(mixed) vs \(mixedNum)")
    }
}
