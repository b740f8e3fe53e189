import Foundation
import Testing
import Tape
import Atoms
import Potentials
@testable import Relax

/// The pulled CHGNet 0.3.0 model, nil when `relaxft models pull chgnet-0.3.0` has not been run.
enum PulledCHGNet {
    static let path = ModelStore.path(of: "chgnet-0.3.0")
    static let model: (any Potential)? = try? ModelFile.load(path).potential
    static let skipMessage = Comment(rawValue: "CHGNet weights not found at \(path): run 'relaxft models pull chgnet-0.3.0' (or set RELAXFT_HOME)")
}

@Suite struct CHGNetFIRETests {
    /// ASE's FIRE with the real chgnet package's calculator (float64), 20 steps from the 63-atom vacancy fixture
    /// (Fixtures/chgnet/fire20-float64.extxyz): relaxft's FIRE with the CHGNet port reproduces every frame —
    /// positions, energy, forces — and the optimizer state after every step.
    @Test(.enabled(if: PulledCHGNet.model != nil, PulledCHGNet.skipMessage))
    func fireTrajectoryMatchesASEWithRealCHGNet() throws {
        let frames = try StructureIO.read(repoRoot.appendingPathComponent("Fixtures/chgnet/fire20-float64.extxyz").path)
        #expect(frames.count == 21)
        // Energies within 1e-8 relative (|E| ≈ 335 eV).
        compareFIRETrajectory(PulledCHGNet.model!, frames, label: "CHGNet FIRE 20 steps vs ASE + chgnet", position: 1e-8,
                              energy: 1e-8 * abs(frames[0].energy!), force: 1e-7, velocity: 1e-8)
    }
}
