// A reader for the subset of Python's pickle format (protocols 2-4) that `torch.save` checkpoints use:
// containers, numbers, strings, globals referenced by name (never imported or executed), REDUCE/NEWOBJ/BUILD
// recorded as plain data, and persistent ids (torch's references to tensor storages). Opcode semantics follow
// the documentation in CPython's Lib/pickletools.py.

public struct PickleError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { "pickle: \(message)" }
}

/// A decoded pickle value. Calls of globals are kept as data: `.call(callable, args, state)`; the only
/// callable interpreted is `collections.OrderedDict` (becomes `.dict`).
public indirect enum PickleValue: Sendable, Equatable, CustomStringConvertible {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case list([PickleValue])
    case tuple([PickleValue])
    /// Key/value pairs in insertion order.
    case dict([PickleEntry])
    /// `module.name`, as referenced by GLOBAL or STACK_GLOBAL.
    case global(module: String, name: String)
    /// REDUCE or NEWOBJ of `callable` with `args`, with the state given by BUILD, if any.
    case call(callable: PickleValue, args: PickleValue, state: PickleValue?)
    /// A persistent id (BINPERSID); for torch, a tuple describing a tensor storage.
    case persistent(PickleValue)

    public subscript(key: String) -> PickleValue? {
        guard case .dict(let entries) = self else { return nil }
        return entries.first { $0.key == .string(key) }?.value
    }

    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    public var intValue: Int? { if case .int(let v) = self { return v } else { return nil } }
    /// Elements of a tuple or list.
    public var items: [PickleValue]? {
        switch self {
        case .tuple(let v), .list(let v): return v
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let v): return "\(v)"
        case .float(let v): return "\(v)"
        case .string(let s): return "'\(s)'"
        case .bytes(let b): return "b<\(b.count) bytes>"
        case .list(let v): return "[" + v.map(\.description).joined(separator: ", ") + "]"
        case .tuple(let v): return "(" + v.map(\.description).joined(separator: ", ") + (v.count == 1 ? ",)" : ")")
        case .dict(let e): return "{" + e.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "}"
        case .global(let m, let n): return "\(m).\(n)"
        case .call(let c, let a, let s): return "\(c)\(a)" + (s.map { " + state \($0)" } ?? "")
        case .persistent(let p): return "persistent\(p)"
        }
    }
}

public struct PickleEntry: Sendable, Equatable {
    public let key: PickleValue
    public let value: PickleValue
}

public enum Unpickler {
    /// Decodes one pickle (up to STOP).
    public static func load(_ bytes: [UInt8]) throws -> PickleValue {
        var m = Machine(bytes: bytes)
        return try m.run()
    }

    // While decoding, lists, dicts and objects are mutable and shared (the memo and the stack refer to the
    // same object, and APPEND/SETITEM/BUILD mutate it), so they are reference types until STOP.
    final class ListBox { var items: [Item] = [] }
    final class DictBox { var entries: [(Item, Item)] = [] }
    final class CallBox {
        let callable: Item, args: Item
        var state: Item?
        init(callable: Item, args: Item) { self.callable = callable; self.args = args }
    }

    indirect enum Item {
        case value(PickleValue)
        case tuple([Item])
        case list(ListBox)
        case dict(DictBox)
        case call(CallBox)
        case persistent(Item)
        case mark

        /// Immutable snapshot; depth-limited, since a pickle can make containers that contain themselves.
        func freeze(depth: Int = 0) throws -> PickleValue {
            guard depth < 10_000 else { throw PickleError(message: "nesting deeper than 10000 (recursive structure?)") }
            switch self {
            case .value(let v): return v
            case .tuple(let t): return .tuple(try t.map { try $0.freeze(depth: depth + 1) })
            case .list(let l): return .list(try l.items.map { try $0.freeze(depth: depth + 1) })
            case .dict(let d): return .dict(try d.entries.map { PickleEntry(key: try $0.0.freeze(depth: depth + 1), value: try $0.1.freeze(depth: depth + 1)) })
            case .call(let c):
                return .call(callable: try c.callable.freeze(depth: depth + 1), args: try c.args.freeze(depth: depth + 1),
                             state: try c.state.map { try $0.freeze(depth: depth + 1) })
            case .persistent(let p): return .persistent(try p.freeze(depth: depth + 1))
            case .mark: throw PickleError(message: "MARK left on the stack")
            }
        }
    }

    struct Machine {
        let bytes: [UInt8]
        var pos = 0
        var stack: [Item] = []
        var memo: [Int: Item] = [:]

        init(bytes: [UInt8]) { self.bytes = bytes }

        mutating func byte() throws -> UInt8 {
            guard pos < bytes.count else { throw PickleError(message: "unexpected end of data") }
            defer { pos += 1 }
            return bytes[pos]
        }

        mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
            guard n >= 0, pos + n <= bytes.count else { throw PickleError(message: "unexpected end of data (needed \(n) bytes at offset \(pos))") }
            defer { pos += n }
            return bytes[pos..<(pos + n)]
        }

        /// Unsigned little-endian integer of n bytes.
        mutating func uint(_ n: Int) throws -> Int {
            var v: UInt64 = 0
            for (k, b) in try take(n).enumerated() { v |= UInt64(b) << UInt64(8 * k) }
            guard v <= UInt64(Int.max) else { throw PickleError(message: "length \(v) out of range") }
            return Int(v)
        }

        mutating func line() throws -> String {
            guard let end = bytes[pos...].firstIndex(of: 0x0A) else { throw PickleError(message: "unterminated text line") }
            defer { pos = end + 1 }
            return String(decoding: bytes[pos..<end], as: UTF8.self)
        }

        mutating func pop() throws -> Item {
            guard let top = stack.popLast() else { throw PickleError(message: "stack underflow at offset \(pos)") }
            if case .mark = top { throw PickleError(message: "unexpected MARK at offset \(pos)") }
            return top
        }

        /// Items above the topmost MARK (which is removed).
        mutating func popToMark() throws -> [Item] {
            guard let m = stack.lastIndex(where: { if case .mark = $0 { return true } else { return false } }) else {
                throw PickleError(message: "no MARK on the stack at offset \(pos)")
            }
            let items = Array(stack[(m + 1)...])
            stack.removeSubrange(m...)
            return items
        }

        func text(_ item: Item) throws -> String {
            if case .value(.string(let s)) = item { return s }
            throw PickleError(message: "expected a string for STACK_GLOBAL")
        }

        mutating func setItems(_ kv: [Item]) throws {
            guard kv.count % 2 == 0 else { throw PickleError(message: "SETITEMS with an odd number of items") }
            guard case .dict(let d) = try pop() else { throw PickleError(message: "SETITEM(S) on something that is not a dict") }
            for k in stride(from: 0, to: kv.count, by: 2) { d.entries.append((kv[k], kv[k + 1])) }
            stack.append(.dict(d))
        }

        mutating func appendItems(_ items: [Item]) throws {
            guard case .list(let l) = try pop() else { throw PickleError(message: "APPEND(S) on something that is not a list") }
            l.items.append(contentsOf: items)
            stack.append(.list(l))
        }

        mutating func call(_ callable: Item, _ args: Item) -> Item {
            if case .value(.global("collections", "OrderedDict")) = callable, case .tuple(let a) = args, a.isEmpty {
                return .dict(DictBox())
            }
            return .call(CallBox(callable: callable, args: args))
        }

        /// The virtual machine's loop: one case per opcode of the subset, each a few lines on the shared stack and
        /// memo. It is long (about 100 lines) because the opcode table is; split apart, the cases would each need
        /// the whole machine state passed around for no gain in clarity.
        mutating func run() throws -> PickleValue {
            while true {
                let at = pos
                let op = try byte()
                switch op {
                case 0x80: // PROTO
                    let v = try byte()
                    guard v <= 5 else { throw PickleError(message: "unsupported protocol \(v)") }
                case 0x95: _ = try take(8) // FRAME: a length prefix only
                case 0x2E: // STOP
                    let top = try pop()
                    return try top.freeze()
                case 0x28: stack.append(.mark) // MARK
                case 0x30: _ = try pop() // POP
                case 0x31: _ = try popToMark() // POP_MARK
                case 0x32: let t = try pop(); stack.append(t); stack.append(t) // DUP
                case 0x7D: stack.append(.dict(DictBox())) // EMPTY_DICT
                case 0x5D: stack.append(.list(ListBox())) // EMPTY_LIST
                case 0x29: stack.append(.tuple([])) // EMPTY_TUPLE
                case 0x74: stack.append(.tuple(try popToMark())) // TUPLE
                case 0x85: let a = try pop(); stack.append(.tuple([a])) // TUPLE1
                case 0x86: let b = try pop(), a = try pop(); stack.append(.tuple([a, b])) // TUPLE2
                case 0x87: let c = try pop(), b = try pop(), a = try pop(); stack.append(.tuple([a, b, c])) // TUPLE3
                case 0x64: // DICT
                    let kv = try popToMark()
                    stack.append(.dict(DictBox()))
                    try setItems(kv)
                case 0x6C: // LIST
                    let items = try popToMark()
                    stack.append(.list(ListBox()))
                    try appendItems(items)
                case 0x71, 0x72: // BINPUT, LONG_BINPUT
                    let k = try uint(op == 0x71 ? 1 : 4)
                    guard let top = stack.last else { throw PickleError(message: "PUT on an empty stack") }
                    memo[k] = top
                case 0x94: // MEMOIZE
                    guard let top = stack.last else { throw PickleError(message: "MEMOIZE on an empty stack") }
                    memo[memo.count] = top
                case 0x68, 0x6A: // BINGET, LONG_BINGET
                    let k = try uint(op == 0x68 ? 1 : 4)
                    guard let v = memo[k] else { throw PickleError(message: "memo key \(k) not defined (offset \(at))") }
                    stack.append(v)
                case 0x4A: // BININT: signed 4 bytes
                    stack.append(.value(.int(Int(Int32(truncatingIfNeeded: UInt32(try uint(4)))))))
                case 0x4B: stack.append(.value(.int(try uint(1)))) // BININT1
                case 0x4D: stack.append(.value(.int(try uint(2)))) // BININT2
                case 0x8A: // LONG1: two's complement little-endian of n bytes
                    let n = Int(try byte())
                    let b = try take(n)
                    guard n <= 8 else { throw PickleError(message: "integer of \(n) bytes does not fit in 64 bits") }
                    var v: UInt64 = 0
                    for (k, x) in b.enumerated() { v |= UInt64(x) << UInt64(8 * k) }
                    if n > 0 && n < 8 && b.last! & 0x80 != 0 { v |= ~UInt64(0) << UInt64(8 * n) }
                    stack.append(.value(.int(Int(Int64(bitPattern: v)))))
                case 0x47: // BINFLOAT: big-endian IEEE double
                    var v: UInt64 = 0
                    for x in try take(8) { v = v << 8 | UInt64(x) }
                    stack.append(.value(.float(Double(bitPattern: v))))
                case 0x58, 0x8C, 0x8D: // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
                    let n = try uint(op == 0x58 ? 4 : op == 0x8C ? 1 : 8)
                    stack.append(.value(.string(String(decoding: try take(n), as: UTF8.self))))
                case 0x54, 0x55: // BINSTRING, SHORT_BINSTRING (Python 2 str; bytes decoded as Latin-1 would be exact, UTF-8 is enough here)
                    let n = try uint(op == 0x54 ? 4 : 1)
                    stack.append(.value(.string(String(decoding: try take(n), as: UTF8.self))))
                case 0x42, 0x43, 0x8E: // BINBYTES, SHORT_BINBYTES, BINBYTES8
                    let n = try uint(op == 0x42 ? 4 : op == 0x43 ? 1 : 8)
                    stack.append(.value(.bytes(Array(try take(n)))))
                case 0x4E: stack.append(.value(.none)) // NONE
                case 0x88: stack.append(.value(.bool(true))) // NEWTRUE
                case 0x89: stack.append(.value(.bool(false))) // NEWFALSE
                case 0x61: let v = try pop(); try appendItems([v]) // APPEND
                case 0x65: try appendItems(try popToMark()) // APPENDS
                case 0x73: let v = try pop(), k = try pop(); try setItems([k, v]) // SETITEM
                case 0x75: try setItems(try popToMark()) // SETITEMS
                case 0x63: // GLOBAL: "module\nname\n"
                    let module = try line(), name = try line()
                    stack.append(.value(.global(module: module, name: name)))
                case 0x93: // STACK_GLOBAL
                    let name = try text(try pop()), module = try text(try pop())
                    stack.append(.value(.global(module: module, name: name)))
                case 0x52, 0x81: // REDUCE, NEWOBJ
                    let args = try pop(), callable = try pop()
                    stack.append(call(callable, args))
                case 0x62: // BUILD
                    let state = try pop()
                    let target = try pop()
                    switch target {
                    case .call(let c): c.state = state
                    // Attributes of a dict subclass (torch sets `_metadata` on state_dict OrderedDicts): dropped.
                    case .dict: break
                    default: throw PickleError(message: "BUILD on something that is not an object (offset \(at))")
                    }
                    stack.append(target)
                case 0x51: stack.append(.persistent(try pop())) // BINPERSID
                default:
                    throw PickleError(message: "unsupported opcode 0x\(String(op, radix: 16)) at offset \(at)")
                }
            }
        }
    }
}
