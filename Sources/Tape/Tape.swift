// Reverse-mode automatic differentiation over whole-tensor operations.
//
// One node per tensor operation (never per scalar). Each operation's backward rule is written with the same
// differentiable operations, so running the backward pass while recording (`createGraph: true`) yields a
// graph that can be differentiated again: forces −∂E/∂x stay differentiable with respect to x and θ, which
// BPTT through a relaxation and Hessian-vector products need. With `createGraph: false` the same rules run
// on constants, i.e. on the raw kernels, and nothing is recorded.
//
// Ownership: Variables hold their tape strongly; nodes hold values and closures but never Variables, so no
// reference cycle forms through backward rules. A checkpoint body must take every tracked Variable it uses
// as an input (it is checked) and should not capture tracked Variables; `Tape.reset()` breaks any cycle.

public typealias BackwardFunction = (BackwardContext) -> [Variable?]

/// What a backward rule sees: the upstream gradients of the node's outputs, which inputs need a gradient,
/// and the node's saved inputs and outputs as Variables (tracked, so rules are differentiable when recording).
public struct BackwardContext {
    public let tape: Tape
    let node: Node
    /// Upstream gradient per output (nil: no gradient reached that output).
    public let gradOutputs: [Variable?]
    /// needs[k]: input k needs a gradient. Rules may return nil for inputs that do not.
    public let needs: [Bool]

    /// Input k; the operation must have saved it (see `Saving`).
    public func input(_ k: Int) -> Variable {
        let i = node.inputs[k]
        guard let v = i.value else { preconditionFailure("\(node.name): input \(k) was not saved for the backward pass") }
        return Variable(value: v, id: i.id, tape: i.id >= 0 ? tape : nil)
    }

    /// Output k; the operation must have saved it (see `Saving`).
    public func output(_ k: Int = 0) -> Variable {
        Variable(value: node.savedOutput(k), id: node.firstOutput + k, tape: tape)
    }

    /// Extra tensor k kept by a fused operation for its backward (see `makeFusedOp`).
    func extra(_ k: Int) -> Tensor { node.extras[k] }

    public func inputShape(_ k: Int) -> [Int] { node.inputs[k].shape }
    public func outputShape(_ k: Int = 0) -> [Int] { node.outputShape(k) }
    public var inputCount: Int { node.inputs.count }
    public var outputCount: Int { node.outputCount }

    /// Upstream gradient of the single output.
    public var grad: Variable { gradOutputs[0]! }

    /// Upstream gradient of output k, zeros when none arrived.
    public func gradOrZero(_ k: Int) -> Variable {
        gradOutputs[k] ?? Variable(constant: Tensor.zeros(node.outputShape(k), kind: node.outputKind))
    }
}

/// Which values a recorded operation keeps for its backward rule. A node holds only these (and the shapes of
/// all its inputs and outputs), so values no rule reads are freed as soon as the forward code drops them.
public struct Saving: Sendable, Equatable {
    /// Bit k: input k is saved (k < 63); bit 63: every input from 63 on.
    var inputMask: UInt64
    var output: Bool

    /// Every input and every output (the default of `makeOp`).
    public static let all = Saving(inputMask: .max, output: true)
    /// Shapes only: for linear operations whose backward needs no values.
    public static let nothing = Saving(inputMask: 0, output: false)
    /// The outputs only.
    public static let outputs = Saving(inputMask: 0, output: true)

    /// The listed inputs (and the outputs when `output` is true).
    public static func inputs(_ ks: Int..., output: Bool = false) -> Saving {
        var m: UInt64 = 0
        for k in ks { precondition(k >= 0 && k < 63, "Saving.inputs: index \(k) out of range 0..<63"); m |= 1 << UInt64(k) }
        return Saving(inputMask: m, output: output)
    }

    /// Every input, no output.
    public static let allInputs = Saving(inputMask: .max, output: false)

    func savesInput(_ k: Int) -> Bool { (inputMask >> UInt64(Swift.min(k, 63))) & 1 == 1 }
}

final class Node {
    enum Kind {
        case leaf
        case op(BackwardFunction)
        /// A checkpointed segment: its body, and which body outputs are this node's outputs (the others are
        /// inputs passed through, which keep their slots).
        case checkpoint(([Variable]) -> [Variable], [Int])
    }

    /// Input slot (-1 for a constant), value (nil when the operation does not save it) and shape.
    struct Input {
        let id: Int
        let value: Tensor?
        let shape: [Int]
    }

    let name: StaticString
    private(set) var inputs: [Input]
    let firstOutput: Int
    // The first output is stored inline: most nodes have exactly one, and this saves an allocation per node.
    private(set) var output0: Tensor?
    let shape0: [Int]
    /// Element type of the outputs (a node's outputs share one).
    let outputKind: ScalarKind
    private(set) var moreOutputs: [Tensor?]
    let moreShapes: [[Int]]
    /// Values the backward reads besides inputs and outputs (fused operations' saved intermediates).
    private(set) var extras: [Tensor]
    private(set) var kind: Kind

    init(name: StaticString, inputs: [Input], firstOutput: Int, outputs: [Tensor], saveOutputs: Bool, extras: [Tensor] = [], kind: Kind) {
        self.name = name
        self.inputs = inputs
        self.firstOutput = firstOutput
        output0 = saveOutputs ? outputs[0] : nil
        shape0 = outputs[0].shape
        outputKind = outputs[0].kind
        moreOutputs = outputs.count == 1 ? [] : outputs.dropFirst().map { saveOutputs ? $0 : nil }
        moreShapes = outputs.count == 1 ? [] : outputs.dropFirst().map(\.shape)
        self.extras = extras
        self.kind = kind
    }

    var outputCount: Int { 1 + moreOutputs.count }
    func outputShape(_ k: Int) -> [Int] { k == 0 ? shape0 : moreShapes[k - 1] }
    func savedOutput(_ k: Int) -> Tensor {
        guard let v = k == 0 ? output0 : moreOutputs[k - 1] else { preconditionFailure("\(name): output \(k) was not saved for the backward pass") }
        return v
    }
    /// Drops every value and the backward rule (a node of a part of the tape that will not be swept again).
    func release() {
        inputs = inputs.map { Input(id: $0.id, value: nil, shape: $0.shape) }
        output0 = nil
        moreOutputs = moreOutputs.map { _ in nil }
        extras = []
        kind = .leaf
    }

    /// Every tensor this node keeps alive.
    var heldTensors: [Tensor] { inputs.compactMap(\.value) + ([output0] + moreOutputs).compactMap { $0 } + extras }
}

/// A tensor value, possibly tracked on a tape.
public struct Variable {
    public let value: Tensor
    /// Slot on the tape, -1 for constants.
    public let id: Int
    public let tape: Tape?

    init(value: Tensor, id: Int, tape: Tape?) {
        self.value = value
        self.id = id
        self.tape = id >= 0 ? tape : nil
    }

    /// An untracked value.
    public init(constant value: Tensor) {
        self.value = value
        id = -1
        tape = nil
    }

    public init(constant scalar: Double) { self.init(constant: Tensor(scalar: scalar)) }

    public var isTracked: Bool { id >= 0 }
    public var shape: [Int] { value.shape }
    public var rank: Int { value.rank }
    public var count: Int { value.count }
    public var scalar: Double { value.scalar }

    /// The same value, untracked (no gradient flows through it).
    public var detached: Variable { Variable(constant: value) }
}

public final class Tape {
    /// When false, operations produce constants and nothing is recorded.
    public var isRecording = true
    /// Hint to code that computes gradients inside a forward pass (forces): whether the values computed now
    /// will be differentiated again, i.e. whether to pass `createGraph: true`. A checkpoint's first, discarded
    /// forward pass sets it to false.
    public var needsHigherOrder = true

    var nodes: [Node] = []
    /// slot id → node index; -1 for slots of discarded nodes. Slot ids are never reused.
    var slotNode: [Int32] = []

    public init() {}

    /// Number of recorded nodes.
    public var nodeCount: Int { nodes.count }
    /// Number of slots ever allocated.
    public var slotCount: Int { slotNode.count }

    /// Drops every node (and breaks any reference cycle through checkpoint bodies). Variables of this tape
    /// must not be used afterwards.
    public func reset() {
        nodes.removeAll(keepingCapacity: false)
        for i in 0..<slotNode.count { slotNode[i] = -1 }
    }

    /// A new leaf (independent variable).
    public func variable(_ value: Tensor) -> Variable {
        record(name: "leaf", inputs: [], output: value, kind: .leaf)
    }

    public func variable(_ scalar: Double) -> Variable { variable(Tensor(scalar: scalar)) }

    /// Runs `body` without recording.
    public func withoutRecording<R>(_ body: () throws -> R) rethrows -> R {
        let was = isRecording
        isRecording = false
        defer { isRecording = was }
        return try body()
    }

    private func nodeInputs(_ name: StaticString, _ inputs: [Variable], _ saving: Saving) -> [Node.Input] {
        var ins = [Node.Input]()
        ins.reserveCapacity(inputs.count)
        for (k, v) in inputs.enumerated() {
            if v.id >= 0 {
                precondition(slotNode[v.id] >= 0, "\(name): an input variable belongs to a discarded part of the tape")
            }
            ins.append(Node.Input(id: v.id, value: saving.savesInput(k) ? v.value : nil, shape: v.value.shape))
        }
        return ins
    }

    func record(name: StaticString, inputs: [Variable], output: Tensor, saving: Saving = .all, kind: Node.Kind) -> Variable {
        let first = slotNode.count
        slotNode.append(Int32(nodes.count))
        nodes.append(Node(name: name, inputs: nodeInputs(name, inputs, saving), firstOutput: first, outputs: [output], saveOutputs: saving.output, kind: kind))
        return Variable(value: output, id: first, tape: self)
    }

    func record(name: StaticString, inputs: [Variable], outputs: [Tensor], saving: Saving = .all, extras: [Tensor] = [], kind: Node.Kind) -> [Variable] {
        precondition(!outputs.isEmpty, "\(name): a node needs at least one output")
        let first = slotNode.count
        let nodeIndex = Int32(nodes.count)
        for _ in outputs { slotNode.append(nodeIndex) }
        nodes.append(Node(name: name, inputs: nodeInputs(name, inputs, saving), firstOutput: first, outputs: outputs, saveOutputs: saving.output,
                          extras: extras, kind: kind))
        return outputs.enumerated().map { k, o in Variable(value: o, id: first + k, tape: self) }
    }

    func truncate(toNodeCount n: Int) {
        guard n < nodes.count else { return }
        for node in nodes[n...] {
            for k in 0..<node.outputCount { slotNode[node.firstOutput + k] = -1 }
        }
        nodes.removeSubrange(n...)
    }

    /// Floating-point operations of the recorded matrix products, 2·m·k·n each (for FLOP estimates;
    /// k is recovered from the element counts, |A|·|B| = m·k²·n, whatever the transpose flags).
    public func matmulFlops() -> Double {
        var total = 0.0
        // Fused products with a bias (affine, linear) count as their product.
        for n in nodes where ["matmul", "affine", "linear"].contains("\(n.name)") {
            let a = Double(Tensor.elementCount(n.inputs[0].shape)), b = Double(Tensor.elementCount(n.inputs[1].shape))
            let c = Double(Tensor.elementCount(n.shape0))
            guard c > 0 else { continue }
            total += 2 * c * (a * b / c).squareRoot()
        }
        return total
    }

    /// Node counts by operation name (for profiling).
    public func profile() -> [(name: String, count: Int)] {
        var c: [String: Int] = [:]
        for n in nodes { c["\(n.name)", default: 0] += 1 }
        return c.sorted { $0.value > $1.value }.map { ($0.key, $0.value) }
    }

    /// Node counts and bytes of tensor storage the nodes keep alive, by operation name (for profiling). Each
    /// buffer is counted once, for the first node (in recording order) that holds it.
    /// With `byShape`, operations are told apart by their input shapes too.
    public func memoryProfile(byShape: Bool = false) -> [(name: String, count: Int, bytes: Int)] {
        var seen = Set<ObjectIdentifier>()
        var c: [String: (Int, Int)] = [:]
        for n in nodes {
            var bytes = 0
            for t in n.heldTensors where seen.insert(ObjectIdentifier(t.storage)).inserted { bytes += t.kind.size * t.count }
            let key = byShape ? "\(n.name) \(n.inputs.map(\.shape))" : "\(n.name)"
            let old = c[key] ?? (0, 0)
            c[key] = (old.0 + 1, old.1 + bytes)
        }
        return c.sorted { $0.value.1 > $1.value.1 }.map { ($0.key, $0.value.0, $0.value.1) }
    }
}

// MARK: - Recording operations

/// The tape that records an operation on `inputs`: the tape of its tracked inputs, if it is recording.
@inline(__always)
func recordingTape(_ inputs: [Variable]) -> Tape? {
    var tape: Tape?
    for v in inputs where v.id >= 0 {
        if let t = tape {
            precondition(t === v.tape!, "operation on variables of two different tapes")
        } else {
            tape = v.tape
        }
    }
    guard let t = tape, t.isRecording else { return nil }
    return t
}

/// Records a single-output operation (or returns a constant when no input is tracked on a recording tape).
/// `backward` returns one gradient per input, with the input's shape, or nil where `needs` is false.
/// `saving` names the values the backward rule reads (`BackwardContext.input`, `output`); the node keeps only
/// those, so that memory no rule needs is released with the forward code's last reference.
public func makeOp(_ name: StaticString, _ inputs: [Variable], _ value: Tensor, saving: Saving = .all,
                   _ backward: @escaping BackwardFunction) -> Variable {
    guard let tape = recordingTape(inputs) else { return Variable(constant: value) }
    return tape.record(name: name, inputs: inputs, output: value, saving: saving, kind: .op(backward))
}

/// Records an operation with several outputs.
public func makeMultiOp(_ name: StaticString, _ inputs: [Variable], _ values: [Tensor], saving: Saving = .all,
                        _ backward: @escaping BackwardFunction) -> [Variable] {
    guard let tape = recordingTape(inputs) else { return values.map { Variable(constant: $0) } }
    return tape.record(name: name, inputs: inputs, outputs: values, saving: saving, kind: .op(backward))
}

/// Records a fused operation that keeps `extras` (intermediates its backward reads, e.g. activations' sigmoids)
/// besides the saved inputs and outputs. `extras` is evaluated only when the operation is recorded.
func makeFusedOp(_ name: StaticString, _ inputs: [Variable], _ values: [Tensor], saving: Saving, extras: @autoclosure () -> [Tensor],
                 _ backward: @escaping BackwardFunction) -> [Variable] {
    guard let tape = recordingTape(inputs) else { return values.map { Variable(constant: $0) } }
    return tape.record(name: name, inputs: inputs, outputs: values, saving: saving, extras: extras(), kind: .op(backward))
}

// MARK: - Gradients

extension Tape {
    /// ∂y/∂x for each x in `wrt` (y must be a scalar unless `seed` is given), in the spirit of
    /// `torch.autograd.grad`. With `createGraph: true` the backward pass is recorded, so the returned
    /// gradients are differentiable again. Variables that y does not depend on get zero gradients.
    public func gradient(of y: Variable, wrt xs: [Variable], seed: Tensor? = nil, createGraph: Bool = false) -> [Variable] {
        let s = seed ?? {
            precondition(y.count == 1, "gradient(of:) needs a scalar or an explicit seed; got shape \(y.shape)")
            return Tensor(shape: y.shape, repeating: 1, kind: y.value.kind)
        }()
        return vjp(of: [y], seeds: [Variable(constant: s)], wrt: xs, createGraph: createGraph)
    }

    /// Vector-Jacobian product: Σ_k seeds[k]·∂ys[k]/∂x for each x. Seeds may be tracked (their own
    /// derivatives then flow when `createGraph` is true).
    public func vjp(of ys: [Variable], seeds: [Variable], wrt xs: [Variable], createGraph: Bool = false) -> [Variable] {
        precondition(ys.count == seeds.count, "vjp: \(ys.count) outputs but \(seeds.count) seeds")
        var lo = Int.max
        for x in xs where x.id >= 0 {
            precondition(x.tape === self, "gradient with respect to a variable of another tape")
            precondition(slotNode[x.id] >= 0, "gradient with respect to a discarded variable")
            lo = Swift.min(lo, Int(slotNode[x.id]))
        }
        var hi = -1
        for (y, s) in zip(ys, seeds) where y.id >= 0 {
            precondition(y.tape === self, "gradient of a variable of another tape")
            precondition(y.shape == s.shape, "seed shape \(s.shape) differs from output shape \(y.shape)")
            hi = Swift.max(hi, Int(slotNode[y.id]))
        }
        guard hi >= 0 && lo <= hi else { return xs.map { Variable(constant: Tensor.zeros($0.shape, kind: $0.value.kind)) } }
        var sweep = Sweep(tape: self, createGraph: createGraph, slotBase: nodes[lo].firstOutput)
        for x in xs where x.id >= 0 { sweep.markTarget(x.id) }
        sweep.markRelevant(nodes: lo..<(hi + 1))
        let wasRecording = isRecording
        isRecording = createGraph
        defer { isRecording = wasRecording }
        for (y, s) in zip(ys, seeds) where y.id >= 0 && sweep.isRelevant(y.id) { sweep.accumulate(y.id, s) }
        sweep.run(nodes: lo..<(hi + 1))
        return xs.map { x in
            if x.id >= 0, let g = sweep.gradient(x.id) { return g }
            return Variable(constant: Tensor.zeros(x.shape, kind: x.value.kind))
        }
    }

    /// Vector-Jacobian product of `body`, a composition of differentiable operations, at `inputs`:
    /// Σ_k seeds[k]·∂body_k/∂inputs[i] for each input with needs[i]. The composition is recorded and swept
    /// locally; when the tape is recording the result is differentiable again (its nodes stay), otherwise they are
    /// dropped. Fused operations use it as the backward rule for derivative orders their kernels do not cover.
    public func compositionVJP(_ inputs: [Variable], seeds: [Variable?], needs: [Bool], _ body: ([Variable]) -> [Variable]) -> [Variable?] {
        precondition(needs.count == inputs.count, "compositionVJP: one need per input")
        let createGraph = isRecording
        let start = nodes.count
        isRecording = true
        let outs = body(inputs)
        isRecording = createGraph
        precondition(outs.count == seeds.count, "compositionVJP: \(outs.count) outputs but \(seeds.count) seeds")
        defer { if !createGraph { truncate(toNodeCount: start) } }
        var base = Int.max
        for (x, need) in zip(inputs, needs) where need && x.id >= 0 {
            precondition(x.tape === self, "compositionVJP: an input belongs to another tape")
            base = Swift.min(base, x.id)
        }
        guard base != Int.max else { return inputs.map { _ in nil } }
        var sweep = Sweep(tape: self, createGraph: createGraph, slotBase: base)
        // The targets' producers lie before the composition: mark the targets relevant themselves.
        for (x, need) in zip(inputs, needs) where need && x.id >= 0 { sweep.markTarget(x.id); sweep.relevant[x.id - base] = true }
        sweep.markRelevant(nodes: start..<nodes.count)
        for (o, s) in zip(outs, seeds) where o.id >= 0 && (sweep.isRelevant(o.id) || sweep.isTarget(o.id)) {
            if let s { sweep.accumulate(o.id, s) }
        }
        sweep.run(nodes: start..<nodes.count)
        return zip(inputs, needs).map { x, need in
            guard need else { return nil }
            return x.id >= 0 ? (sweep.gradient(x.id) ?? Variable(constant: Tensor.zeros(x.shape, kind: x.value.kind))) : Variable(constant: Tensor.zeros(x.shape, kind: x.value.kind))
        }
    }

    /// Hessian-vector product (∂²f/∂x²)·v by double backward.
    public func hessianVectorProduct(of f: Variable, wrt x: Variable, vector v: Tensor, createGraph: Bool = false) -> Variable {
        let g = gradient(of: f, wrt: [x], createGraph: true)[0]
        let gv = (g * Variable(constant: v)).sum()
        return gradient(of: gv, wrt: [x], createGraph: createGraph)[0]
    }
}

/// State of one backward sweep. Per-slot state lives in arrays indexed from `slotBase` (slots are allocated in
/// node order, so the sweep's slots are contiguous, extended when checkpointed segments are recomputed).
struct Sweep {
    let tape: Tape
    let createGraph: Bool
    let slotBase: Int
    var grads: [Variable?] = []
    var relevant: [Bool] = []
    var target: [Bool] = []
    // Scratch buffers reused for every node (no allocation per node).
    var gradScratch: [Variable?] = []
    var needsScratch: [Bool] = []

    init(tape: Tape, createGraph: Bool, slotBase: Int) {
        self.tape = tape
        self.createGraph = createGraph
        self.slotBase = slotBase
        extend()
    }

    /// Grows the per-slot arrays to cover every slot allocated so far.
    mutating func extend() {
        let n = tape.slotNode.count - slotBase
        if relevant.count < n {
            let extra = n - relevant.count
            relevant.append(contentsOf: repeatElement(false, count: extra))
            target.append(contentsOf: repeatElement(false, count: extra))
            grads.append(contentsOf: repeatElement(nil, count: extra))
        }
    }

    mutating func markTarget(_ slot: Int) { target[slot - slotBase] = true }

    func isTarget(_ slot: Int) -> Bool {
        let k = slot - slotBase
        return k >= 0 && k < target.count && target[k]
    }

    func isRelevant(_ slot: Int) -> Bool {
        let k = slot - slotBase
        return k >= 0 && k < relevant.count && relevant[k]
    }

    func gradient(_ slot: Int) -> Variable? {
        let k = slot - slotBase
        return k >= 0 && k < grads.count ? grads[k] : nil
    }

    /// Marks the outputs of nodes that depend on a target.
    mutating func markRelevant(nodes range: Range<Int>) {
        extend()
        for n in range {
            let node = tape.nodes[n]
            var r = false
            for k in 0..<node.outputCount where isTarget(node.firstOutput + k) { r = true }
            if !r { for i in node.inputs where i.id >= 0 && isRelevant(i.id) { r = true; break } }
            if r { for k in 0..<node.outputCount { relevant[node.firstOutput + k - slotBase] = true } }
        }
    }

    mutating func accumulate(_ slot: Int, _ g: Variable) {
        let k = slot - slotBase
        guard let oldShape = grads[k]?.shape else { grads[k] = g; return }
        precondition(oldShape == g.shape, "gradient shape \(g.shape) does not match \(oldShape)")
        guard !createGraph && grads[k]!.id < 0 && g.id < 0 else { grads[k] = grads[k]! + g; return }
        // Constants: add into the accumulated buffer in place when nothing else holds it (the same sums as `old + g`).
        var taken: Variable? = nil
        swap(&taken, &grads[k])
        var sum = taken!.value
        taken = nil
        sum.addInPlace(g.value)
        grads[k] = Variable(constant: sum)
    }

    /// Sweeps the nodes of `range` backwards. With `releasing`, each node's values are dropped once it has been
    /// swept (for parts of the tape that are discarded afterwards), so that memory is reused within the sweep.
    mutating func run(nodes range: Range<Int>, releasing: Bool = false) {
        for n in range.reversed() {
            let node = tape.nodes[n]
            defer { if releasing { node.release() } }
            let nOut = node.outputCount
            guard isRelevant(node.firstOutput) else { continue }
            gradScratch.removeAll(keepingCapacity: true)
            var any = false
            for k in 0..<nOut {
                let s = node.firstOutput + k - slotBase
                let g = grads[s]
                // An intermediate's gradient is complete once its producer is reached: release it.
                if !target[s] { grads[s] = nil }
                gradScratch.append(g)
                if g != nil { any = true }
            }
            guard any else { continue }
            switch node.kind {
            case .leaf:
                break
            case .op(let backward):
                needsScratch.removeAll(keepingCapacity: true)
                var anyNeed = false
                for i in node.inputs {
                    let need = i.id >= 0 && isRelevant(i.id)
                    needsScratch.append(need)
                    if need { anyNeed = true }
                }
                guard anyNeed else { continue }
                let ctx = BackwardContext(tape: tape, node: node, gradOutputs: gradScratch, needs: needsScratch)
                let gIn = backward(ctx)
                precondition(gIn.count == node.inputs.count, "\(node.name): backward returned \(gIn.count) gradients for \(node.inputs.count) inputs")
                for k in 0..<gIn.count where needsScratch[k] {
                    if let g = gIn[k] {
                        precondition(g.shape == node.inputs[k].shape, "\(node.name): gradient of input \(k) has shape \(g.shape), expected \(node.inputs[k].shape)")
                        accumulate(node.inputs[k].id, g)
                    }
                }
            case .checkpoint(let body, let outputIndices):
                // A segment whose inputs do not depend on a target only produces targets (e.g. forces with
                // respect to a segment's output positions): recomputing it would give nothing, and would
                // recurse through every earlier segment.
                guard node.inputs.contains(where: { $0.id >= 0 && isRelevant($0.id) }) else { continue }
                let gOut = gradScratch
                expandCheckpoint(node, body: body, outputIndices: outputIndices, gradOutputs: gOut)
            }
        }
    }

    /// Recomputes a checkpointed segment with recording and sweeps its nodes in place, accumulating into
    /// the same gradient slots in the same order as if the segment had been recorded in the first place,
    /// so gradients are bit-identical to the unrecorded-free version.
    mutating func expandCheckpoint(_ node: Node, body: ([Variable]) -> [Variable], outputIndices: [Int], gradOutputs: [Variable?]) {
        let start = tape.nodes.count
        let firstNewSlot = tape.slotNode.count
        let wasRecording = tape.isRecording, wasHigher = tape.needsHigherOrder
        tape.isRecording = true
        tape.needsHigherOrder = true
        let inputs = node.inputs.map { i in Variable(value: i.value!, id: i.id, tape: i.id >= 0 ? tape : nil) }
        let outs = body(inputs)
        tape.isRecording = wasRecording
        tape.needsHigherOrder = wasHigher
        precondition(outputIndices.allSatisfy { $0 < outs.count }, "checkpoint body returned fewer outputs on recomputation")
        let end = tape.nodes.count
        markRelevant(nodes: start..<end)
        for (slot, k) in outputIndices.enumerated() {
            let o = outs[k]
            guard let g = gradOutputs[slot], o.id >= 0, isRelevant(o.id) else { continue }
            accumulate(o.id, g)
        }
        // Without a recorded graph the segment is discarded after this sweep: release its nodes as they are swept.
        run(nodes: start..<end, releasing: !createGraph)
        if !createGraph {
            tape.truncate(toNodeCount: start)
            for k in (firstNewSlot - slotBase)..<grads.count where !target[k] { grads[k] = nil }
        }
    }
}

// MARK: - Checkpointing

extension Tape {
    /// Runs `body` on `inputs` without keeping its intermediate nodes; only the inputs and outputs are stored.
    /// When a backward pass reaches the segment, it is recomputed with recording and differentiated in place,
    /// so gradients are bit-identical to recording the segment directly. `body` must be deterministic, must
    /// receive every tracked variable it depends on through `inputs`, and may be called more than once.
    public func checkpoint(_ inputs: [Variable], _ body: @escaping ([Variable]) -> [Variable]) -> [Variable] {
        guard isRecording, inputs.contains(where: { $0.id >= 0 && $0.tape === self }) else { return body(inputs) }
        let start = nodes.count
        let firstNewSlot = slotNode.count
        let wasHigher = needsHigherOrder
        needsHigherOrder = false
        let outs = body(inputs)
        needsHigherOrder = wasHigher
        let allowed = Set(inputs.filter { $0.id >= 0 }.map(\.id))
        for node in nodes[start...] {
            for i in node.inputs where i.id >= 0 && i.id < firstNewSlot {
                precondition(allowed.contains(i.id), "checkpoint body uses a tracked variable that is not among its inputs")
            }
        }
        // Outputs that are inputs passed through keep their identity, so that downstream gradients accumulate
        // into the same slots, in the same order, as without checkpointing. Every other output becomes an
        // output of the node — constants too: an output computed without a graph in this first pass (forces,
        // with needsHigherOrder off) is tracked when recomputed.
        var newIndices: [Int] = []
        for (k, o) in outs.enumerated() where o.id < 0 || o.id >= firstNewSlot { newIndices.append(k) }
        let values = newIndices.map { outs[$0].value }
        truncate(toNodeCount: start)
        guard !newIndices.isEmpty else { return outs }
        let created = record(name: "checkpoint", inputs: inputs, outputs: values, kind: .checkpoint(body, newIndices))
        var result = outs
        for (slot, k) in newIndices.enumerated() { result[k] = created[slot] }
        return result
    }
}
