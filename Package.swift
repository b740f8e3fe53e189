// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "relaxft",
    products: [
        .executable(name: "relaxft", targets: ["relaxft"]),
        .library(name: "Tape", targets: ["Tape"]),
        .library(name: "Atoms", targets: ["Atoms"]),
    ],
    targets: [
        // OpenBLAS (cblas.h) and LAPACKE from Debian's libopenblas-dev and liblapacke-dev.
        .systemLibrary(name: "CLinalg", path: "Sources/CLinalg", providers: [.apt(["libopenblas-dev", "liblapacke-dev"])]),
        .target(name: "Tape", dependencies: ["CLinalg"]),
        .target(name: "Atoms", dependencies: ["Tape"]),
        .executableTarget(name: "relaxft", dependencies: ["Tape", "Atoms"]),
        .executableTarget(name: "relaxft-bench", dependencies: ["Tape", "CLinalg"], path: "Sources/Bench"),
        .testTarget(name: "TapeTests", dependencies: ["Tape"]),
        .testTarget(name: "AtomsTests", dependencies: ["Atoms"], exclude: ["Malformed"]),
    ]
)
