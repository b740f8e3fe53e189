import Foundation
import Testing
import Tape
import Atoms
import Potentials
import Relax
import Loss
@testable import FineTune

@Suite struct CHGNetBPTTTests {
    static let path = ModelStore.path(of: "chgnet-0.3.0")
    static let model: (any Potential)? = try? ModelFile.load(path).potential
    static let skipMessage = Comment(rawValue: "CHGNet weights not found at \(path): run 'relaxft models pull chgnet-0.3.0' (or set RELAXFT_HOME)")

    /// The gradient of the relaxed-structure loss after 10 FIRE steps with CHGNet 0.3.0, by backpropagation
    /// through the steps (which differentiates the forces with respect to the weights: CHGNet's second
    /// derivatives), against five-point differences of the unrolled loss for randomly chosen weights.
    @Test(.enabled(if: model != nil, skipMessage))
    func tenFIREStepsGradientMatchesFiniteDifferences() throws {
        checkTenFIREStepsGradient(Self.model!, label: "CHGNet")
    }
}
