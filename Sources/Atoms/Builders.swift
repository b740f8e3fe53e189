import Tape

extension Structure {
    /// Diamond-structure crystal in the conventional cubic cell (8 atoms) repeated r×r×r, like
    /// `ase.build.bulk(symbol, 'diamond', a=a, cubic=True).repeat(r)` (same atom order).
    public static func diamond(atomicNumber z: Int = 14, a: Double = 5.431, repeats r: Int = 1) -> Structure {
        let basis: [[Double]] = [[0, 0, 0], [0.25, 0.25, 0.25], [0, 0.5, 0.5], [0.25, 0.75, 0.75],
                                 [0.5, 0, 0.5], [0.75, 0.25, 0.75], [0.5, 0.5, 0], [0.75, 0.75, 0.25]]
        var pos: [Double] = []
        // ASE's repeat loops over cells with the first axis slowest, atoms of a cell contiguous.
        for i in 0..<r { for j in 0..<r { for k in 0..<r { for b in basis {
            pos += [(Double(i) + b[0]) * a, (Double(j) + b[1]) * a, (Double(k) + b[2]) * a]
        } } } }
        let n = pos.count / 3
        let side = a * Double(r)
        return Structure(numbers: Array(repeating: z, count: n), positions: Tensor(shape: [n, 3], pos),
                         cell: Tensor(shape: [3, 3], [side, 0, 0, 0, side, 0, 0, 0, side]), pbc: [true, true, true])
    }
}
