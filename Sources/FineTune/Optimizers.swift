import Foundation
import Tape

/// Adam / AdamW (Kingma & Ba 2015; decoupled weight decay of Loshchilov & Hutter 2019) over named tensors.
/// Its state is Codable so that training resumes exactly.
public struct Adam: Codable, Sendable {
    public var learningRate: Double
    public var beta1: Double
    public var beta2: Double
    public var epsilon: Double
    /// Decoupled weight decay (AdamW); 0 gives Adam.
    public var weightDecay: Double
    public private(set) var step = 0
    /// Per-parameter factors on the learning rate (e.g. the parameters' initial magnitudes, for steps relative
    /// to each parameter's scale); 1 when absent.
    public var scales: [String: Double] = [:]
    public private(set) var m: [String: [Double]] = [:]
    public private(set) var v: [String: [Double]] = [:]

    public init(learningRate: Double = 1e-3, beta1: Double = 0.9, beta2: Double = 0.999, epsilon: Double = 1e-8, weightDecay: Double = 0) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
    }

    /// One update of `parameters` with `gradients` (same names and shapes). `countStep: false` updates another
    /// group of parameters within the same optimizer step (same bias correction).
    public mutating func update(_ parameters: inout [String: Tensor], gradients: [String: Tensor], countStep: Bool = true) {
        if countStep || step == 0 { step += 1 }
        let c1 = 1 - Foundation.pow(beta1, Double(step)), c2 = 1 - Foundation.pow(beta2, Double(step))
        for name in parameters.keys.sorted() {
            guard let g = gradients[name] else { continue }
            var p = parameters[name]!
            precondition(p.shape == g.shape, "Adam: gradient of \(name) has shape \(g.shape), parameter \(p.shape)")
            var mm = m[name] ?? [Double](repeating: 0, count: p.count)
            var vv = v[name] ?? [Double](repeating: 0, count: p.count)
            let lr = learningRate * (scales[name] ?? 1), wd = weightDecay, b1 = beta1, b2 = beta2, eps = epsilon
            p.withUnsafeMutableBufferPointer { pp in
                g.withUnsafeBufferPointer { gg in
                    for i in 0..<pp.count {
                        mm[i] = b1 * mm[i] + (1 - b1) * gg[i]
                        vv[i] = b2 * vv[i] + (1 - b2) * gg[i] * gg[i]
                        let mh = mm[i] / c1, vh = vv[i] / c2
                        pp[i] -= lr * (mh / (vh.squareRoot() + eps) + wd * pp[i])
                    }
                }
            }
            m[name] = mm
            v[name] = vv
            parameters[name] = p
        }
    }
}

/// Global gradient norm and clipping to `maxNorm` (no-op when the norm is below it or maxNorm ≤ 0).
public func clipGradients(_ gradients: inout [String: Tensor], maxNorm: Double) -> Double {
    var sq = 0.0
    // Sorted keys: a dictionary's iteration order differs between instances, and so would the last bit.
    for k in gradients.keys.sorted() { sq += gradients[k]!.dot(gradients[k]!) }
    let norm = sq.squareRoot()
    if maxNorm > 0 && norm > maxNorm {
        let s = maxNorm / norm
        for k in gradients.keys { gradients[k] = gradients[k]! * s }
    }
    return norm
}

/// Learning-rate schedules.
public enum LearningRateSchedule: Codable, Sendable, Equatable {
    case constant
    /// Cosine decay from the base rate to `minFactor`·base over `epochs`.
    case cosine(epochs: Int, minFactor: Double)
    /// Multiply by `factor` when the monitored value has not improved for `patience` epochs.
    case reduceOnPlateau(factor: Double, patience: Int, minLearningRate: Double)
    /// Multiply by `factor` every `every` epochs.
    case exponential(factor: Double, every: Int)

    public static func parse(_ s: String, epochs: Int) throws -> LearningRateSchedule {
        switch s {
        case "constant": return .constant
        case "cosine": return .cosine(epochs: epochs, minFactor: 0.01)
        case "plateau", "reduce-on-plateau": return .reduceOnPlateau(factor: 0.5, patience: 5, minLearningRate: 1e-7)
        default: throw ScheduleError(message: "unknown schedule '\(s)' (constant, cosine, plateau)")
        }
    }

    public struct ScheduleError: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }
}

/// Schedule state: base rate, current rate, plateau bookkeeping.
public struct ScheduleState: Codable, Sendable {
    public var schedule: LearningRateSchedule
    public var baseRate: Double
    public private(set) var rate: Double
    /// Best monitored value so far (nil before the first epoch; JSON has no infinity).
    public private(set) var best: Double?
    public private(set) var badEpochs = 0

    public init(_ schedule: LearningRateSchedule, baseRate: Double) {
        self.schedule = schedule
        self.baseRate = baseRate
        rate = baseRate
    }

    /// Rate for the epoch after `epoch` (0-based) given the monitored value of that epoch.
    public mutating func endEpoch(_ epoch: Int, monitored: Double) {
        switch schedule {
        case .constant:
            break
        case .cosine(let epochs, let minFactor):
            let t = Swift.min(Double(epoch + 1) / Double(Swift.max(epochs, 1)), 1)
            rate = baseRate * (minFactor + (1 - minFactor) * 0.5 * (1 + Foundation.cos(Double.pi * t)))
        case .reduceOnPlateau(let factor, let patience, let minRate):
            if monitored < (best ?? .infinity) { best = monitored; badEpochs = 0 } else {
                badEpochs += 1
                if badEpochs > patience { rate = Swift.max(rate * factor, minRate); badEpochs = 0 }
            }
        case .exponential(let factor, let every):
            if (epoch + 1) % Swift.max(every, 1) == 0 { rate *= factor }
        }
    }
}
