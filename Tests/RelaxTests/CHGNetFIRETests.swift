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
        let model = PulledCHGNet.model!
        let fire = FIRE()
        let hyper = fire.constantHyper, params = model.constantParameters
        var evaluator = ForceEvaluator(potential: model, structure: frames[0])
        let evaluate: ForceFunction = { x in evaluator.evaluate(positions: x, parameters: params) }
        var state = fire.start(positions: Variable(constant: frames[0].positions), hyper: hyper, evaluate: evaluate)
        var worst = (x: 0.0, e: 0.0, f: 0.0, v: 0.0, dt: 0.0, a: 0.0)
        for (k, ref) in frames.enumerated() {
            if state.forces == nil { (state.energy, state.forces) = evaluate(state.positions) }
            let dx = state.positions.value.maxAbsDifference(ref.positions)
            let de = abs(state.energy!.scalar - ref.energy!) / abs(ref.energy!)
            let df = state.forces!.value.maxAbsDifference(ref.forces!)
            guard case .doubles(let vel)? = ref.arrays["fire_velocities"] else { Issue.record("frame \(k): no fire_velocities"); return }
            let dv = k == 0 ? 0 : state.velocity.value.maxAbsDifference(vel)
            let ddt = abs(state.dt.scalar - ref.info["fire_dt"]!.doubleValue!) / ref.info["fire_dt"]!.doubleValue!
            let da = abs(state.a.scalar - ref.info["fire_a"]!.doubleValue!) / ref.info["fire_a"]!.doubleValue!
            worst = (max(worst.x, dx), max(worst.e, de), max(worst.f, df), max(worst.v, dv), max(worst.dt, ddt), max(worst.a, da))
            #expect(dx <= 1e-8, "frame \(k): positions differ by \(dx) Å")
            #expect(de <= 1e-8, "frame \(k): energy \(state.energy!.scalar) vs \(ref.energy!)")
            #expect(df <= 1e-7, "frame \(k): forces differ by \(df) eV/Å")
            #expect(dv <= 1e-8, "frame \(k): velocities differ by \(dv)")
            #expect(ddt <= 1e-12 && da <= 1e-12, "frame \(k): dt \(state.dt.scalar), a \(state.a.scalar)")
            #expect(state.downhillSteps == ref.info["fire_nsteps"]!.intValue!, "frame \(k): FIRE's downhill step count")
            if k < frames.count - 1 { state = fire.step(state, hyper: hyper, evaluate: evaluate) }
        }
        print("CHGNet FIRE 20 steps vs ASE + chgnet: max |Δx| \(worst.x) Å, |ΔE|/|E| \(worst.e), |ΔF| \(worst.f) eV/Å, |Δv| \(worst.v), Δdt/dt \(worst.dt), Δa/a \(worst.a)")
    }
}
