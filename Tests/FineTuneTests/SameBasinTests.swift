import Foundation
import Testing
import Tape
import Atoms
import Loss
import Potentials
import Relax
@testable import FineTune

/// The "same basin" metric of relaxft evaluate on relaxations (the bond graph itself: LossTests).
@Suite struct SameBasinTests {
    /// evaluateRelaxations: the exact potential reproduces the reference basin; a perturbed one may not.
    @Test func sameBasinFromEvaluation() throws {
        let examples = Array(try recoveryExamples("test").prefix(2))
        let proto = RelaxationProtocol(relaxer: FIRE(), steps: 300, stopFmax: 0.01)
        let exact = evaluateRelaxations(examples, potential: StillingerWeber(), protocol: proto)
        #expect(exact.allSatisfy { $0.sameBasin && $0.differingBonds == 0 && $0.deltaQ < 0.3 })
        let loose = evaluateRelaxations(examples, potential: StillingerWeber(), protocol: proto, basin: BasinCriterion(deltaQ: 1e-9))
        #expect(loose.allSatisfy { !$0.sameBasin && $0.differingBonds == 0 }, "ΔQ threshold applies")
        #expect(exact.allSatisfy { $0.relaxationEnergyError == nil }, "the SW data has no energy_initial")
    }
}
