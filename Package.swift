// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "relaxft",
    products: [
        .executable(name: "relaxft", targets: ["relaxft"]),
        .library(name: "Tape", targets: ["Tape"]),
        .library(name: "Atoms", targets: ["Atoms"]),
        .library(name: "Potentials", targets: ["Potentials"]),
    ],
    targets: [
        // OpenBLAS (cblas.h) and LAPACKE from Debian's libopenblas-dev and liblapacke-dev.
        .systemLibrary(name: "CLinalg", path: "Sources/CLinalg", providers: [.apt(["libopenblas-dev", "liblapacke-dev"])]),
        .target(name: "Tape", dependencies: ["CLinalg"]),
        .target(name: "Atoms", dependencies: ["Tape"]),
        .target(name: "Potentials", dependencies: ["Tape", "Atoms"]),
        .target(name: "FineTune", dependencies: ["Tape", "Atoms", "Potentials"]),
        .executableTarget(name: "relaxft", dependencies: ["Tape", "Atoms", "Potentials", "FineTune"]),
        .executableTarget(name: "relaxft-bench", dependencies: ["Tape", "Atoms", "Potentials", "CLinalg"], path: "Sources/Bench"),
        .testTarget(name: "TapeTests", dependencies: ["Tape"]),
        .testTarget(name: "AtomsTests", dependencies: ["Atoms"]),
        .testTarget(name: "PotentialsTests", dependencies: ["Potentials"]),
        .testTarget(name: "FineTuneTests", dependencies: ["FineTune", "Potentials", "Atoms", "Tape"]),
    ]
)
