import Tape

/// When an unrolled relaxation stops, and which states it checks on the way.
public struct UnrollControl: Sendable {
    /// Steps at most.
    public var maxSteps: Int
    /// Stop at the first checked state whose fmax is below this (decided on values, never differentiated).
    public var stopFmax: Double?
    /// Check every state, also without a stop rule (for a caller that logs them).
    public var checkEveryState: Bool
    /// Also check the state after the last step (a plain relaxation reports it; a recorded unroll leaves the
    /// final forces to its caller, so that the tape holds no evaluation the loss does not use).
    public var checkFinalState: Bool

    public init(maxSteps: Int, stopFmax: Double? = nil, checkEveryState: Bool = false, checkFinalState: Bool = false) {
        self.maxSteps = maxSteps
        self.stopFmax = stopFmax
        self.checkEveryState = checkEveryState
        self.checkFinalState = checkFinalState
    }
}

public struct UnrollOutcome: Sendable {
    /// Steps taken.
    public var steps: Int
    /// Whether the stop rule ended the unroll (rather than the step budget).
    public var stopped: Bool
    /// fmax at the last checked state (nil when no state was checked).
    public var fmax: Double?
}

/// The stop-and-step loop of every relaxation: a plain one (`relax`, which implicit differentiation also
/// relaxes with), a recorded one, each checkpointed segment and the unrecorded prefix of a truncated one.
/// Advances `state` by at most `control.maxSteps` steps of `relaxer`. A state is checked (its forces
/// evaluated, or taken from the state's cache, and `onCheck(state, steps so far, fmax)` called) before every
/// step when there is a stop rule or `checkEveryState`, and after the last step with `checkFinalState`. Whether the
/// hyperparameters and the evaluated forces are tape variables or constants decides whether the steps are
/// recorded; the loop is the same.
@discardableResult
public func unroll<R: Relaxer>(_ relaxer: R, state: inout R.State, hyper: R.Inputs, control: UnrollControl,
                               evaluate: ForceFunction, onCheck: (R.State, Int, Double) -> Void = { _, _, _ in }) -> UnrollOutcome {
    let checking = control.stopFmax != nil || control.checkEveryState
    var done = 0
    var fmax: Double? = nil
    while true {
        let atEnd = done >= control.maxSteps
        if checking && (!atEnd || control.checkFinalState) {
            let m = maxRowNorm(state.currentForces(evaluate).value)
            fmax = m
            onCheck(state, done, m)
            if let stop = control.stopFmax, m < stop { return UnrollOutcome(steps: done, stopped: true, fmax: m) }
        }
        if atEnd { return UnrollOutcome(steps: done, stopped: false, fmax: fmax) }
        state = relaxer.step(state, hyper: hyper, evaluate: evaluate)
        done += 1
    }
}
