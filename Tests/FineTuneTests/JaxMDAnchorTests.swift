import Foundation
import Testing
import Tape
import Atoms
import Potentials
import Relax
@testable import FineTune

/// The peers' BPTT problem: reproduce JAX-MD's loss and gradient (Fixtures/peers/README.md).
@Suite struct JaxMDAnchorTests {
    @Test func bpttMatchesJaxMDReference() throws {
        let dir = repoRoot.appendingPathComponent("Fixtures/peers").path
        var start = try StructureIO.read(dir + "/si_diamond_2x2x2_vac.extxyz")[0]
        let target = try StructureIO.read(dir + "/sw_target_relaxed_2x2x2.extxyz")[0]
        start.customMasses = Array(repeating: 28.0855, count: start.count)
        let ex = RelaxationExample(name: "peers", initial: start, target: target.positions)
        let pot = StillingerWeber(cosEpsilon: 1e-7)
        var settings = BPTTSettings(relaxer: FIREJaxMD(float16: true), steps: 100)
        settings.mode = .checkpoint(every: 10)
        let r = relaxationLossAndGradient(ex, potential: pot, settings: settings)
        #expect(abs(r.loss - 0.7514429040313056) < 1e-12, "loss \(r.loss)")
        let ref: [String: Double] = ["sigma": -38.69968013881963, "epsilon": -5.414101690624852e-4, "lambda": -7.83616353702702e-5]
        for (k, v) in ref {
            let g = r.gradients[k]!.scalar
            // JAX-MD and PyTorch agree with each other to ~1e-15 of the largest component.
            #expect(abs(g - v) < 1e-11 * 38.7, "∂loss/∂\(k): \(g) vs JAX-MD \(v)")
        }
    }
}
