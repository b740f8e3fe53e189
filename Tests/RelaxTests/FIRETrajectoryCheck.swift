import Foundation
import Testing
import Tape
import Atoms
import Potentials
@testable import Relax

/// Runs relaxft's FIRE with `model` from the first frame of an ASE FIRE trajectory written by a peers' golden
/// script (per frame: positions, energy, forces, and the optimizer state after the step: `fire_dt`, `fire_a`,
/// `fire_nsteps`, `fire_velocities`) and compares every frame; returns the worst differences.
@discardableResult
func compareFIRETrajectory(_ model: any Potential, _ frames: [Structure], label: String, position: Double, energy: Double,
                           force: Double, velocity: Double) -> (x: Double, e: Double, f: Double, v: Double) {
    let fire = FIRE()
    let hyper = fire.constantHyper, params = model.constantParameters
    var evaluator = ForceEvaluator(potential: model, structure: frames[0])
    let evaluate: ForceFunction = { x in evaluator.evaluate(positions: x, parameters: params) }
    var state = fire.start(positions: Variable(constant: frames[0].positions), hyper: hyper, evaluate: evaluate)
    var worst = (x: 0.0, e: 0.0, f: 0.0, v: 0.0, dt: 0.0, a: 0.0)
    for (k, ref) in frames.enumerated() {
        if state.forces == nil { (state.energy, state.forces) = evaluate(state.positions) }
        let dx = state.positions.value.maxAbsDifference(ref.positions)
        let de = abs(state.energy!.scalar - ref.energy!)
        let df = state.forces!.value.maxAbsDifference(ref.forces!)
        guard case .doubles(let vel)? = ref.arrays["fire_velocities"] else { Issue.record("frame \(k): no fire_velocities"); break }
        let dv = k == 0 ? 0 : state.velocity.value.maxAbsDifference(vel)
        let ddt = abs(state.dt.scalar - ref.info["fire_dt"]!.doubleValue!) / ref.info["fire_dt"]!.doubleValue!
        let da = abs(state.a.scalar - ref.info["fire_a"]!.doubleValue!) / ref.info["fire_a"]!.doubleValue!
        worst = (max(worst.x, dx), max(worst.e, de), max(worst.f, df), max(worst.v, dv), max(worst.dt, ddt), max(worst.a, da))
        #expect(dx <= position, "frame \(k): positions differ by \(dx) Å")
        #expect(de <= energy, "frame \(k): energy \(state.energy!.scalar) vs \(ref.energy!)")
        #expect(df <= force, "frame \(k): forces differ by \(df) eV/Å")
        #expect(dv <= velocity, "frame \(k): velocities differ by \(dv)")
        #expect(ddt <= 1e-12 && da <= 1e-12, "frame \(k): dt \(state.dt.scalar), a \(state.a.scalar)")
        #expect(state.downhillSteps == ref.info["fire_nsteps"]!.intValue!, "frame \(k): FIRE's downhill step count")
        if k < frames.count - 1 { state = fire.step(state, hyper: hyper, evaluate: evaluate) }
    }
    print("\(label): max |Δx| \(worst.x) Å, |ΔE| \(worst.e) eV, |ΔF| \(worst.f) eV/Å, |Δv| \(worst.v), Δdt/dt \(worst.dt), Δa/a \(worst.a)")
    return (worst.x, worst.e, worst.f, worst.v)
}
