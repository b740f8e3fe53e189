import Atoms
import Dynamics
import Foundation
import Potentials
import Tape

/// A change of StABlE's phase at the end of an epoch (or of the learning rate within a learning phase).
public struct StablePhaseChange: Sendable, Equatable {
    public enum Reason: Sendable, Equatable {
        /// No replica went unstable in a learning epoch.
        case calm
        /// The learning rate would have been cut once more than allowed (`times` cuts in all).
        case rateReduced(times: Int)
    }
    /// The learning rate was cut to this.
    public var rateReducedTo: Double?
    /// The learning phase ended.
    public var toSimulate: Reason?
    /// A learning phase began, with this fraction of replicas unstable.
    public var toLearn: Double?

    public var isEmpty: Bool { rateReducedTo == nil && toSimulate == nil && toLearn == nil }
}

/// What a StABlE run reports while it works (the command line formats it).
public enum StableEvent: Sendable {
    case epoch(StableEpochMetrics, unstable: Int, improved: Bool, change: StablePhaseChange)
    /// The optimizer step of (1-based) `epoch` gave non-finite parameters and was not applied.
    case skippedStep(epoch: Int)
}

/// Energy/force metrics of the weights of a given version (bumped by every update), kept across epochs.
struct EnergyForceCache {
    var version = 0
    var metrics: (version: Int, value: ForceFieldMetrics)?
}

/// What the replicas did in one epoch's MD segment.
struct SegmentOutcome {
    /// Frames for the estimator, pooled over the replicas.
    var pooled: [Structure]
    var unstable: [Int]
    /// Simulated time since the last restart at which each unstable replica was found unstable (fs).
    var times: [Double]
    var meanStableTime: Double
}

/// The observable on the pooled frames.
struct ObservableOutcome {
    var loss: Double?
    var mae: Double?
    var coefficients: [Double] = []
}

extension StableTrainer {
    /// Runs epochs until the budget (or `maxEpochsThisCall`); `report` gets an event per epoch.
    @discardableResult
    public func run(maxEpochsThisCall: Int? = nil, report: (StableEvent) -> Void = { _ in }) throws -> [StableEpochMetrics] {
        session = try run.beginSession()
        if state.replicas.isEmpty {
            state.stored = initialStates()
            state.replicas = state.stored
        }
        let md = MolecularDynamics(structure: start, potential: model, settings: settings, states: state.replicas)
        md.refreshForces()
        var rows: [StableEpochMetrics] = []
        var cache = EnergyForceCache()
        while state.epoch < config.epochs {
            if let mx = maxEpochsThisCall, rows.count >= mx { break }
            rows.append(try runEpoch(md, cache: &cache, report: report))
        }
        return rows
    }

    /// One epoch: simulate, measure the observable, learn (in a learning phase), keep the best model, change
    /// phase, and write the epoch's outputs.
    func runEpoch(_ md: MolecularDynamics, cache: inout EnergyForceCache, report: (StableEvent) -> Void) throws -> StableEpochMetrics {
        let o = config
        let t0 = Date()
        let learning = state.learning
        if learning && o.restart == "initial" {
            // Same positions and velocities, fresh Langevin noise each epoch (else the paths repeat).
            var fresh = state.stored
            for r in 0..<o.replicas { fresh[r].rng = SeededGenerator(seed: o.seed &+ 0x5EED &* UInt64(state.epoch + 1) &+ UInt64(r)) }
            md.setStates(fresh, forIndices: Array(0..<o.replicas))
            md.refreshForces()
            state.ages = Array(repeating: 0, count: o.replicas)
        }
        let atStart = md.replicas
        let agesAtStart = state.ages
        let paramsAtStart = model.parameters
        let versionAtStart = cache.version
        let scalarsAtStart = scalars()
        let segment = simulate(md, agesAtStart: agesAtStart)
        let fraction = Double(segment.unstable.count) / Double(o.replicas)
        let obs = observe(segment.pooled)
        let rate = state.rate
        var gObs: Double?, gEF: Double?, efLoss: Double?, efMetrics: ForceFieldMetrics?
        if learning {
            (gObs, gEF, efLoss, efMetrics) = learn(md, pooled: segment.pooled, coefficients: obs.coefficients, cache: &cache, versionAtStart: versionAtStart, report: report)
        }
        if efMetrics == nil && !trainFrames.isEmpty {
            if let c = cache.metrics, c.version == versionAtStart { efMetrics = c.value } else {
                var m = model
                m.parameters = paramsAtStart
                let fm = ForceFieldMetrics.compute(potential: m, frames: trainFrames)
                efMetrics = fm
                cache.metrics = (versionAtStart, fm)
            }
        }
        // Best: fewest unstable replicas, then the lowest observable loss (the model this epoch simulated).
        let score = [fraction, obs.loss ?? .infinity]
        let improved = state.best.map { score.lexicographicallyPrecedes($0) } ?? true
        if improved {
            state.best = score
            state.bestEpoch = state.epoch + 1
            var bm = model
            bm.parameters = paramsAtStart
            try run.saveModel(bm, to: "best.safetensors", metadata: provenance(kind: "best", epoch: state.epoch + 1))
        }
        var change = try endLearningEpoch(learning: learning, unstable: segment.unstable, observableLoss: obs.loss)
        // Unstable replicas go back to their state at the start of the epoch (simulation phase, and
        // learning without restarts); learning epochs with restarts begin from the stored states anyway.
        if (!learning || o.restart == "continue") && !segment.unstable.isEmpty {
            md.setStates(segment.unstable.map { atStart[$0] }, forIndices: segment.unstable)
            md.refreshForces()
            for r in segment.unstable { state.ages[r] = agesAtStart[r] }
        }
        if !learning && fraction >= o.unstableFraction {
            state.learning = true
            change = StablePhaseChange(toLearn: fraction)
        }
        state.replicas = md.replicas
        state.epoch += 1
        let row = StableEpochMetrics(epoch: state.epoch, phase: learning ? "learn" : "simulate", learningRate: learning ? rate : 0, fractionUnstable: fraction,
                                     meanTimeToInstability: segment.times.isEmpty ? nil : segment.times.reduce(0, +) / Double(segment.times.count),
                                     meanStableTime: segment.meanStableTime, samples: segment.pooled.count, observableLoss: obs.loss, rdfMAE: obs.mae,
                                     observableGradientNorm: gObs, energyForceGradientNorm: gEF, energyForceLoss: efLoss, energyMAE: efMetrics?.energyMAE,
                                     forceMAE: efMetrics?.forceMAE, scalars: scalarsAtStart, seconds: Date().timeIntervalSince(t0))
        if state.epoch == 1 {
            state.firstRDFMAE = obs.mae
            state.firstFractionUnstable = fraction
        }
        try run.appendMetrics(row.csv, header: metricsHeader)
        try writeRDF()
        try saveCheckpoint()
        try run.saveModel(model, to: "last.safetensors", metadata: provenance(kind: "last", epoch: state.epoch))
        report(.epoch(row, unstable: segment.unstable.count, improved: improved, change: change))
        return row
    }

    /// One MD segment of every replica: the discarded steps first, then the sampled ones; ages updated.
    func simulate(_ md: MolecularDynamics, agesAtStart: [Double]) -> SegmentOutcome {
        let o = config
        var samples: [[Structure]] = Array(repeating: [], count: o.replicas)
        var unstableStep: [Int?] = Array(repeating: nil, count: o.replicas)
        let all = Array(0..<o.replicas)
        if o.discard > 0 {
            unstableStep = md.runSegment(all, steps: o.discard, monitor: monitor, checkInterval: 10).unstableStep
        }
        let running = all.filter { unstableStep[$0] == nil }
        let res = md.runSegment(running, steps: o.steps - o.discard, sampleInterval: o.sampleInterval, monitor: monitor,
                                checkInterval: Swift.min(10, o.sampleInterval), sampleUnstable: o.sampleUnstable)
        for r in running {
            samples[r] = res.samples[r]
            if let u = res.unstableStep[r] { unstableStep[r] = u + o.discard }
        }
        let unstable = all.filter { unstableStep[$0] != nil }
        let times = unstable.map { agesAtStart[$0] + Double(unstableStep[$0]!) * o.timestep }
        for r in all { state.ages[r] = agesAtStart[r] + Double(unstableStep[r] ?? o.steps) * o.timestep }
        return SegmentOutcome(pooled: samples.flatMap { $0 }, unstable: unstable, times: times,
                              meanStableTime: state.ages.reduce(0, +) / Double(o.replicas))
    }

    /// The RDF of the pooled frames against the reference: loss, MAE and the Boltzmann estimator's coefficients.
    func observe(_ pooled: [Structure]) -> ObservableOutcome {
        guard !pooled.isEmpty else { return ObservableOutcome() }
        let values = pooled.map { RadialDistribution.values($0, settings: rdf) }
        let obs = Tensor(shape: [pooled.count, rdf.radii.count], values.flatMap { $0 })
        let (l, mean, c) = BoltzmannEstimator.lossCoefficients(observables: obs, reference: referenceRDF,
                                                               beta: BoltzmannEstimator.beta(temperature: config.temperature))
        if state.initialRDF == nil { state.initialRDF = mean }
        state.lastRDF = mean
        return ObservableOutcome(loss: l, mae: RadialDistribution.meanAbsoluteError(mean, referenceRDF), coefficients: c)
    }

    /// One optimizer step on the observable gradient plus λ times the energy/force gradient, clipped; returns
    /// the gradient norms, the energy/force loss and (with all frames) their metrics.
    func learn(_ md: MolecularDynamics, pooled: [Structure], coefficients: [Double], cache: inout EnergyForceCache, versionAtStart: Int,
               report: (StableEvent) -> Void) -> (Double?, Double?, Double?, ForceFieldMetrics?) {
        let o = config
        var gObs: Double?, gEF: Double?, efLoss: Double?, efMetrics: ForceFieldMetrics?
        var grads: [String: Tensor] = [:]
        for n in names { grads[n] = Tensor.zeros(model.parameters[n]!.shape) }
        if pooled.count >= 2 {
            let g = BoltzmannEstimator.weightedEnergyGradient(model, frames: pooled, coefficients: coefficients, names: names)
            gObs = names.reduce(0.0) { $0 + g[$1]!.dot(g[$1]!) }.squareRoot()
            for n in names { grads[n] = grads[n]! + g[n]! }
        }
        if o.lambda > 0 {
            var frames = trainFrames
            if o.efBatch > 0 && o.efBatch < frames.count {
                state.rng.shuffle(&frames)
                frames = Array(frames.prefix(o.efBatch))
            }
            let (l, g, m) = energyForceGradient(frames)
            efLoss = l
            if o.efBatch == 0 { efMetrics = m; cache.metrics = (versionAtStart, m) }
            gEF = names.reduce(0.0) { $0 + g[$1]!.dot(g[$1]!) }.squareRoot()
            for n in names { grads[n] = grads[n]! + g[n]! * o.lambda }
        }
        if o.clipNorm > 0 { _ = clipGradients(&grads, maxNorm: o.clipNorm) }
        var p: [String: Tensor] = [:]
        for n in names { p[n] = model.parameters[n]! }
        state.adam.learningRate = state.rate
        state.adam.update(&p, gradients: grads)
        if p.values.allSatisfy(\.isFinite) {
            for (k, v) in p { model.parameters[k] = v }
            md.setPotential(model)
            cache.version += 1
        } else {
            report(.skippedStep(epoch: state.epoch + 1))
        }
        return (gObs, gEF, efLoss, efMetrics)
    }

    /// In a learning phase: the plateau schedule on the monitored value, and the end of the phase when no
    /// replica went unstable or the rate was cut too often (the model is kept as end_of_cycleK.safetensors).
    func endLearningEpoch(learning: Bool, unstable: [Int], observableLoss: Double?) throws -> StablePhaseChange {
        var change = StablePhaseChange()
        guard learning else { return change }
        let o = config
        let monitored = o.monitor == "loss" ? (observableLoss ?? .infinity) : Double(unstable.count)
        if monitored < (state.plateauBest ?? .infinity) { state.plateauBest = monitored; state.plateauBad = 0 } else {
            state.plateauBad += 1
            if state.plateauBad > o.plateauPatience {
                state.rate *= o.plateauFactor
                state.reductions += 1
                state.plateauBad = 0
                change.rateReducedTo = state.rate
            }
        }
        let calm = o.unstableFraction > 0 && unstable.isEmpty
        if calm || state.reductions > o.maxReductions {
            state.learning = false
            state.cycle += 1
            state.rate = o.learningRate
            state.reductions = 0
            state.plateauBest = nil
            state.plateauBad = 0
            try run.saveModel(model, to: "end_of_cycle\(state.cycle).safetensors", metadata: provenance(kind: "end of cycle \(state.cycle)", epoch: state.epoch + 1))
            change.toSimulate = calm ? .calm : .rateReduced(times: o.maxReductions + 1)
        }
        return change
    }
}
